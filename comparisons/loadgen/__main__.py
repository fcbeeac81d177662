"""``python -m comparisons.loadgen``: see ``comparisons.loadgen.cli``."""

import sys

from comparisons.loadgen.cli import main

sys.exit(main())
