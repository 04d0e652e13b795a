"""``python -m structpred.cli``."""

import sys

from . import main

sys.exit(main())
