"""Helpers for tests that run scheduling: its own, the end-to-end and reliability suites."""
