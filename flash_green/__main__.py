"""`python -m flash_green ...` -> flash_green.cli.main()."""

from .cli import main

raise SystemExit(main())
