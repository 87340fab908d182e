"""User-facing errors.

Every problem a user can cause (a malformed file, an empty data folder, a checkpoint that does not
fit) is raised as a :class:`MofusionError`. The CLI prints ``mofusion: error: <message>`` on one line
and exits with status 2, so the message must name the file (and line) and say what is wrong.
"""

from __future__ import annotations

from pathlib import Path


class MofusionError(Exception):
    """Base class of errors caused by input, rendered to the user as one line."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name where it has none): what a one-line
    message quotes of a library's multi-line error."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class InputError(MofusionError):
    """A file given by the user is unreadable or malformed.

    Rendered as ``path: line N: problem`` (the line part only when known).
    """

    def __init__(self, path: str | Path | None, problem: str, line: int | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.line = line
        parts = [p for p in (self.path, None if line is None else f"line {line}") if p]
        super().__init__(": ".join([*parts, problem]))


class CheckpointError(MofusionError):
    """A checkpoint is missing, incomplete, or does not fit the data or the code."""


class ConfigError(MofusionError):
    """A configuration value is invalid; the message names the field."""
