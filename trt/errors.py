"""Exceptions for errors a user can cause.

Every one of them ends a command-line run with its message and a non-zero exit status (see
``trt.cli.run``); anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by user input: a file, a flag, an image, a model that does not fit."""


class WeightsError(UserError):
    """Matcher weights are missing, truncated or of the wrong layout."""


class ContractError(UserError):
    """A graph, engine or request that does not follow the matcher tensor contract."""


class ImageError(UserError):
    """An image that cannot be read or used."""


class ProfileError(UserError):
    """A malformed or inconsistent optimization-profile file."""


class BuildError(UserError):
    """The TensorRT parser or builder rejected the model."""


class EngineError(UserError):
    """An engine that cannot be served here: missing, truncated, mismatched or built for another target."""


class PairsFailed(UserError):
    """Some pairs of a pairs job failed; the others were written. Exit status 3, apart from the 2 of a
    job that could not run at all, so that a script can tell a partial result from none."""

    exit_status = 3
