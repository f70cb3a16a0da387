"""Errors (and warnings) caused by what a user asked for.

Every error a user can trigger with bad input derives from :class:`DiffuseError` and
carries a message that names the offending thing and the fix. The command line prints
such errors without a traceback and exits with status 2; anything else is a bug.
"""


class DiffuseError(Exception):
    """Base class of errors caused by the user's input, configuration or files."""


class ConfigError(DiffuseError, ValueError):
    """An invalid option, configuration value or combination of them."""


class DataError(DiffuseError, ValueError):
    """A data set, image or sample file that cannot be used as it is."""


class MissingFileError(DiffuseError, FileNotFoundError):
    """A file or folder the user named, or that we looked for, does not exist."""


class CheckpointError(DiffuseError, ValueError):
    """A checkpoint that is corrupt, incomplete or of another architecture."""


class CorruptCheckpointError(CheckpointError):
    """A file of a checkpoint that is missing, truncated or unreadable: the checkpoint is
    damaged, while an earlier one of the same run may still serve."""


class OutputExistsError(ConfigError, FileExistsError):
    """An output file or folder exists already and replacing it was not asked for (a
    :class:`ConfigError` too: the output option and the missing overwrite disagree)."""


class OutputInUseError(DiffuseError):
    """An output folder that another process is writing (a training run in progress)."""


class DiskFullError(DiffuseError, OSError):
    """A write that failed because its disk is full or its quota exceeded."""


class DiffuseWarning(UserWarning):
    """Something a user should know that did not stop the work, such as a damaged
    checkpoint passed over; the command line prints it as one line."""


class InexpressibleError(ConfigError):
    """Settings that the other side of a conversion (another library's model or
    scheduler) cannot express; ``problems`` names each, and the message lists them all."""

    def __init__(self, what: str, problems: list[str], outcome: str = ""):
        self.problems = list(problems)
        message = f"{what} cannot express {'; '.join(self.problems)}"
        super().__init__(f"{message}; {outcome}" if outcome else message)


def is_int_at_least(value: object, minimum: int) -> bool:
    """Whether ``value`` is an integer >= ``minimum``; a bool is not one here, though
    Python counts it as an int (``steps=True`` is a mistake, not a count of 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
