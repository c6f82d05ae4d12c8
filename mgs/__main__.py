"""`python -m mgs ...` (and `torchrun -m mgs ...`) runs the CLI."""

import sys

from mgs.cli import main

sys.exit(main())
