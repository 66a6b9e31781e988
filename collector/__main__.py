"""``python -m collector serve`` (same as the ``phonoglyph-collector`` console script)."""

import sys

from collector.cli import main

sys.exit(main())
