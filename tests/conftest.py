"""Shared fixtures. Layer-specific fixtures live in tests/<layer>/conftest.py."""

import atexit
import os
import shutil
import tempfile

# instrumentation re-raises its own errors under tests instead of logging them (docs/architecture.md)
os.environ.setdefault("PHONOGLYPH_INSTRUMENTATION_STRICT", "1")

# the spool of event records that could not be exported: never the real default directory, where one
# test's leftovers would be adopted and sent by a later test (or by a program on this machine)
if "PHONOGLYPH_SPOOL_DIR" not in os.environ:
    os.environ["PHONOGLYPH_SPOOL_DIR"] = tempfile.mkdtemp(prefix="phonoglyph-test-spool-")
    atexit.register(shutil.rmtree, os.environ["PHONOGLYPH_SPOOL_DIR"], ignore_errors=True)
