"""Errors a user can cause. The CLI prints their message (one paragraph) and exits non-zero."""


class PonderError(Exception):
    """Base of every error caused by bad input; its message says what was wrong and what to do."""


class ModelLoadError(PonderError):
    """A model spec that could not be resolved or loaded."""


class ConfigError(PonderError):
    """A config file or option that does not validate."""


class TaskError(PonderError, ValueError):
    """A task that cannot serve what a job asks of it (e.g. too few problems in a split)."""
