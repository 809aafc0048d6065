"""The project's own exceptions.

Every error a user can cause (bad config, missing file, wrong order of verbs) is raised as an
`LmtrainError` with a one-line message that names the key, value or file at fault. The CLI
prints that line and exits non-zero; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
import os
from typing import Iterable

# A write that failed for lack of room: disk full, quota exceeded, or a file-size limit.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_SPACE_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), os.strerror(errno.EFBIG))


class LmtrainError(Exception):
    """A problem the user can fix; the message is shown as is, without a traceback."""


class ConfigError(LmtrainError):
    """A config key, value or override that is unknown, of the wrong type, or out of range."""


class InputError(LmtrainError):
    """An input file that cannot be read as what it is taken for (binary data, a JSON Lines
    record without its text field, ...): like a bad config value, the CLI exits 2."""


class BusyError(LmtrainError):
    """Another process is writing the directory this command would write (`lmtrain.lock`): the
    CLI exits 2 and nothing was changed."""


class CheckpointWarning(UserWarning):
    """A checkpoint was passed over (damaged) for the one before it; the CLI prints it as one
    `warning:` line, a Python caller gets a warning."""


class Interrupted(LmtrainError):
    """Training stopped on SIGINT/SIGTERM after a checkpoint was written; not a failure of the
    user's input. The CLI exits with 128 + the signal number, as a shell does for a killed job."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (TensorFlow's are pages long), or its type's name."""
    lines = str(getattr(exc, "message", None) or exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def describe_write_error(exc: BaseException) -> str:
    """A short reason for a failed write, saying "disk full" when the system says so.

    Works for Python's OSError and for TensorFlow's OpError (matched on its message, so that
    this module need not import TensorFlow).
    """
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return f"disk full ({os.strerror(exc.errno)})"
    first = first_line(exc)
    return f"disk full ({first})" if any(t in first for t in _NO_SPACE_TEXT) else first


def did_you_mean(name: str, options: Iterable[str], prefix: str = "") -> str:
    """" (did you mean X?)" with the option closest to `name`, or "" when none is close: the tail
    of the messages for unknown keys, sections and splits."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
