"""Imported only by tests/test_cold_start.py, through ``Deferred``."""

ANSWER = 42
