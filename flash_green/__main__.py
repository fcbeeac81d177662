"""`python -m flash_green ...`: the CLI, after monkey-patching if asked.

`flash_green.console.main` patches (gevent/eventlet `--patch`) before the CLI
and everything it imports are loaded: see `flash_green.patching`.
"""

from .console import main

raise SystemExit(main())
