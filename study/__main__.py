"""`python -m study ...` is the `study` command (torchrun and the trial group start it this way)."""

import sys

from study.cli import main

sys.exit(main())
