"""Test support for Careloop services.

The pytest plugin in :mod:`careloop_kit.testing.plugin` is registered as ``careloop``
(entry point ``pytest11``) and provides fixtures that start the real infrastructure:
Kafka, PostgreSQL and OpenBao. See that module for the list.
"""
