"""Careloop scheduling service."""
