"""The command line's entry point: `python -m flash_green` and the `flash-green` script.

It patches the standard library first when the command line asks for a
patched engine (gevent or eventlet with `--patch`, from the arguments or
FLASH_CMD_ARGS: `flash_green.patching`), and only then imports the CLI and
everything behind it - engines, sockets, threading - so that nothing keeps
the blocking originals. That is why this module is not `cli.py`: importing
it must import nothing that patching would come too late for.
"""

from __future__ import annotations

import sys

from .patching import patch_from_argv


def main() -> int:
    patch_from_argv(sys.argv[1:])
    # Imported only now, after patching (a deliberate late import).
    from .cli import main as cli_main

    return cli_main()
