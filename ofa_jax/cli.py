"""What every ``python -m`` tool of ofa-jax does around its ``main``."""
from __future__ import annotations

import os
import sys


def run(main) -> None:
    """``sys.exit(main())``, except that a reader that stops early (``... | head``) ends the command
    quietly with status 0, as it ends a Unix filter, instead of a ``BrokenPipeError`` traceback."""
    try:
        code = main()
        sys.stdout.flush()  # inside the try: a closed pipe must fail here, not at interpreter exit
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)


def absl_run(main, argv=None) -> None:
    """``absl.app.run(main)`` for the tools that take absl flags (``--config.key=value``): absl exits
    with status 1 after printing the help that ``--help``/``--helpfull`` asked for; here that is 0."""
    from absl import app

    args = sys.argv if argv is None else argv
    try:
        app.run(main, argv=args)
    except SystemExit as e:
        helps = {"?", "help", "helpshort", "helpfull", "helpxml"}
        flags_given = args[1:args.index("--")] if "--" in args else args[1:]
        if e.code == 1 and any(a.startswith("-") and a.lstrip("-") in helps for a in flags_given):
            sys.exit(0)
        raise
