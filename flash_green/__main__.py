"""`python -m flash_green ...` -> flash_green.cli.main().

Monkey-patching (gevent/eventlet `--patch`) happens here, before the CLI and
everything it imports: see `flash_green.patching`.
"""

import sys

from .patching import patch_from_argv

patch_from_argv(sys.argv[1:])

# Only now, after patching, the CLI and everything it imports.
from .cli import main

raise SystemExit(main())
