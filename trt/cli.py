"""Shared command-line plumbing: user errors end in one line on stderr and exit status 2.

Messages name what the user typed. Under ``make`` (the Makefile runs the scripts with ``LG_VIA_MAKE=1``) a
message's flags become the make variables that set them (``--random-weights SEED`` -> ``WEIGHTS=random``),
through the one table ``MAKE_VARIABLES``; run directly, the scripts' messages keep their flags.
"""

import argparse
import os
import re
import sys
import warnings
from typing import Callable, Optional

from trt.errors import UserError

VIA_MAKE_ENV = "LG_VIA_MAKE"

# flag (either spelling, - or _) -> (make variable, the value it stands for: None for the flag's own argument).
MAKE_VARIABLES = {
    "--weights": ("WEIGHTS", None),
    "--random-weights": ("WEIGHTS", "random"),
    "--nearest-neighbour-weights": ("WEIGHTS", "nn"),
    "--sharp-weights": ("WEIGHTS", "sharp"),
    "--extractor-weights": ("EXTRACTOR_WEIGHTS", None),
    "--extractor-random-weights": ("EXTRACTOR_WEIGHTS", "random"),
    "--extractor-model": ("NETWORK", None),
    "--extractor-type": ("EXTRACTOR", None),
    "--precision": ("PRECISION", None),
    "--profiles": ("PROFILES", None),
    "--target-sm": ("TARGET_SM", None),
    "--max-keypoints": ("MAX_KEYPOINTS", None),
    "--threshold": ("THRESHOLD", None),
    "--workers": ("WORKERS", None),
}
# A flag's argument, when the message gives one: "--weights FILE", "--precision=fp16", "--random-weights 0".
# A plain word after a flag is the sentence going on ("--profiles is"), not its argument.
_ARGUMENT = r"(?:=(?P<joined>[^\s,;()]+)|\s(?P<spaced>[A-Z][A-Z0-9_.|]*\b|[^\s,;()]*[\d/.][^\s,;()]*))?"


def _flag_pattern(flag: str) -> re.Pattern:
    body = "[-_]".join(re.escape(word) for word in re.split("[-_]", flag[2:]))
    return re.compile(rf"(?<![\w-])--{body}(?![\w-]){_ARGUMENT}")


_PATTERNS = [(_flag_pattern(flag), variable, value)
             for flag, (variable, value) in sorted(MAKE_VARIABLES.items(), key=lambda item: -len(item[0]))]


def via_make() -> bool:
    """Whether this script runs as a step of a make target (the Makefile sets ``LG_VIA_MAKE=1``)."""
    return os.environ.get(VIA_MAKE_ENV, "") not in ("", "0")


def speak_make(message: str) -> str:
    """``message`` with every flag of ``MAKE_VARIABLES`` written as its make variable."""

    def replace(variable: str, value: Optional[str]):
        def substitute(match: re.Match) -> str:
            argument = value or match.group("joined") or match.group("spaced")
            return f"{variable}={argument}" if argument else variable
        return substitute

    for pattern, variable, value in _PATTERNS:
        message = pattern.sub(replace(variable, value), message)
    return message


def for_user(message: str) -> str:
    """``message`` in the language of the tool the user typed: make variables under make, else flags."""
    return speak_make(message) if via_make() else message


def spellings(*flags: str) -> list[str]:
    """Each flag and its twin with the other separator (``--max-keypoints`` and ``--max_keypoints``), the given
    spelling first: argparse takes them all for one option, and ``OneSpellingHelp`` shows the first."""
    names = []
    for flag in flags:
        body = flag[2:]
        names += [flag, "--" + (body.replace("-", "_") if "-" in body else body.replace("_", "-"))]
    return list(dict.fromkeys(names))


class OneSpellingHelp(argparse.RawDescriptionHelpFormatter):
    """--help names each option once, by its first (documented) spelling; the others are accepted silently."""

    def _format_action_invocation(self, action):
        short = [flag for flag in action.option_strings if not flag.startswith("--")]
        long = [flag for flag in action.option_strings if flag.startswith("--")]
        if len(long) <= 1:
            return super()._format_action_invocation(action)
        shown = argparse.Action(short + long[:1], action.dest, nargs=action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(shown)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose errors speak the user's tool: under make one line naming the make variable
    ("error: argument PRECISION: invalid choice: 'fp64' ..."), without the script's usage, which names flags."""

    def error(self, message):
        if via_make():
            self.exit(2, f"error: {speak_make(message)}\n")
        super().error(message)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {for_user(str(message))}\n"


def run(main: Callable[[], object]) -> None:
    """Call ``main`` and turn a ``UserError`` into a clean exit (status 2, or the error's ``exit_status``);
    other exceptions keep their traceback.

    Warnings print as one ``warning: …`` line, like errors: they are meant for the user, not a developer.
    """
    warnings.formatwarning = _format_warning
    try:
        main()
    except UserError as error:
        print(f"error: {for_user(str(error))}", file=sys.stderr)
        sys.exit(getattr(error, "exit_status", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
