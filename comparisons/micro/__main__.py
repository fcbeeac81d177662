"""``python -m comparisons.micro --child ...``: one child of the harness (see ``harness.child_main``)."""

import sys

from comparisons.micro.harness import child_main

if len(sys.argv) >= 2 and sys.argv[1] == "--child":
    raise SystemExit(child_main(sys.argv[2:]))
print("usage: python -m flash_green internals  (this module is its worker)", file=sys.stderr)
raise SystemExit(2)
