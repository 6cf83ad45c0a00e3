"""Careloop messaging service."""
