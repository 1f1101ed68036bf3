"""Exceptions whose message is a complete, one-line explanation for the user.

Every error that comes from bad user input (a recipe, an override, a file) is raised as a
subclass of :class:`DecolaError`. The command-line layer prints its message on one line and
exits with status 2, so users never see a traceback from deep inside the library.
"""


class DecolaError(Exception):
    """Base class of user-facing errors; ``str(err)`` is the one-line message."""


class ConfigError(DecolaError):
    """A recipe file, recipe name or override is invalid."""


class DatasetError(DecolaError):
    """A dataset name is unknown or its files are missing or malformed."""


class InputError(DecolaError, ValueError):
    """Input a model cannot take (image size or layout, class names, vocabulary), with the
    advice of what to change; a ``ValueError`` too, for callers of the Python API."""


#: Exit status of a training run stopped by SIGTERM or SIGUSR1 after writing its checkpoint
#: (EX_TEMPFAIL: try again; the same command resumes exactly).
PREEMPTED_EXIT = 75


class Preempted(DecolaError):
    """Training stopped on a signal after writing a complete checkpoint."""

    exit_code = PREEMPTED_EXIT
