"""Shared command-line plumbing: user errors end in one line on stderr and exit status 2."""

import sys
import warnings
from typing import Callable

from trt.errors import UserError


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def run(main: Callable[[], object]) -> None:
    """Call ``main`` and turn a ``UserError`` into a clean exit (status 2, or the error's ``exit_status``);
    other exceptions keep their traceback.

    Warnings print as one ``warning: …`` line, like errors: they are meant for the user, not a developer.
    """
    warnings.formatwarning = _format_warning
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(getattr(error, "exit_status", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
