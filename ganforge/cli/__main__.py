"""``python -m ganforge.cli``: what ``ganforge up`` starts its worker with."""

import sys

from ganforge.cli import main

sys.exit(main())
