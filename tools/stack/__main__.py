"""``python -m tools.stack demo|up``."""

import sys

from tools.stack.commands import main

sys.exit(main())
