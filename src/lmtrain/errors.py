"""The project's own exceptions.

Every error a user can cause (bad config, missing file, wrong order of verbs) is raised as an
`LmtrainError` with a one-line message that names the key, value or file at fault. The CLI
prints that line and exits non-zero; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class LmtrainError(Exception):
    """A problem the user can fix; the message is shown as is, without a traceback."""


class ConfigError(LmtrainError):
    """A config key, value or override that is unknown, of the wrong type, or out of range."""
