"""``python -m structpred ...`` (and ``torchrun -m structpred ...``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
