"""Shared fixtures. Layer-specific fixtures live in tests/<layer>/conftest.py."""

import os

# instrumentation re-raises its own errors under tests instead of logging them (docs/architecture.md)
os.environ.setdefault("PHONOGLYPH_INSTRUMENTATION_STRICT", "1")
