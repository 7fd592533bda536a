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
