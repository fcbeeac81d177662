"""`python -m comparisons.tour`: the same as `python -m flash_green tour`."""

from .cli import main

raise SystemExit(main())
