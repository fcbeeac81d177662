"""`python -m flash_green ...` -> flash_green.cli.main().

Monkey-patching (gevent/eventlet `--patch`) happens here, before the CLI and
everything it imports: see `flash_green.patching`.
"""

import sys

from .patching import patch_from_argv

patch_from_argv(sys.argv[1:])

from .cli import main  # noqa: E402  (after patching, on purpose)

raise SystemExit(main())
