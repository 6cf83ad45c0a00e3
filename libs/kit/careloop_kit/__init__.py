"""Careloop platform kit: what every service shares."""
