"""Errors a user can cause. The CLI prints their message (one paragraph) and exits non-zero."""

import sys


class PonderError(Exception):
    """Base of every error caused by bad input; its message says what was wrong and what to do."""


class ModelLoadError(PonderError):
    """A model spec that could not be resolved or loaded."""


class ConfigError(PonderError):
    """A config file or option that does not validate."""


class TaskError(PonderError, ValueError):
    """A task that cannot serve what a job asks of it (e.g. too few problems in a split)."""


def exit_code(main, *args) -> int:
    """Run a script's ``main(*args)``: its return code (0 for None), or 2 with the one-line message of a
    :class:`PonderError` on stderr instead of a traceback (the ``ponder`` command does the same; an error with an
    ``exit_code``, such as a full disk's 75, exits with that)."""
    try:
        code = main(*args)
    except PonderError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    return code if isinstance(code, int) else 0
