"""``python -m deltanet``: the same command as ``deltanet``."""

import sys

from .cli import main

sys.exit(main())
