"""``python -m metarl``: the same as the ``metarl`` console script."""

import sys

from metarl.cli import main

sys.exit(main())
