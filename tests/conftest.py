"""Shared fixtures. Layer-specific fixtures live in tests/<layer>/conftest.py."""
