"""Shared command-line plumbing: user errors end in one line on stderr and exit status 2."""

import sys
from typing import Callable

from trt.errors import UserError


def run(main: Callable[[], object]) -> None:
    """Call ``main`` and turn a ``UserError`` into a clean exit; other exceptions keep their traceback."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
