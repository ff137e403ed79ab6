"""Which errors are the user's to fix, and so print as one line on the command line.

An error in the user's input or environment (a missing file, data of the wrong size, a
checkpoint of another model, a run folder in use) is reported by the `pydeform` command as
`pydeform: error: <message>` with a non-zero exit; anything else is a bug and keeps its
traceback. Errors keep their types (a ValueError stays a ValueError for callers of the
Python API); they are only marked. `RunError` is for errors the training engine raises
itself. Set PYDEFORM_TRACEBACK=1 to see the traceback of a user error too.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RunError", "TrainingDiverged", "user_errors", "mark_user_error", "is_user_error"]

_MARK = "_pydeform_user_error"


class RunError(RuntimeError):
    """The run cannot go on as asked (its folder is in use, holds another run, ...)."""

    _pydeform_user_error = True


class TrainingDiverged(RunError):
    """A loss became NaN or infinite: training stopped, the last good checkpoint is kept."""


def mark_user_error(exc: BaseException) -> BaseException:
    """Mark `exc` as the user's to fix; returns it."""
    setattr(exc, _MARK, True)
    return exc


def is_user_error(exc: BaseException) -> bool:
    return bool(getattr(exc, _MARK, False))


@contextmanager
def user_errors(*types: type[BaseException]) -> Iterator[None]:
    """Inside this block, errors of `types` (default: ValueError, OSError) come from the
    user's settings, files or machine: mark them. Used around the phases that read user
    input (settings, data, checkpoints, weight files), never around the training math."""
    try:
        yield
    except types or (ValueError, OSError) as exc:
        raise mark_user_error(exc)
