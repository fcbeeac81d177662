"""`python -m flash_green ...`: the CLI, after monkey-patching if asked.

`console_main` patches (gevent/eventlet `--patch`) before the CLI and
everything it imports are loaded: see `flash_green.patching`.
"""

from .patching import console_main

raise SystemExit(console_main())
