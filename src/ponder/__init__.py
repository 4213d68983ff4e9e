"""ponder: treat a language model's thoughts as actions.

Train models to think (RLP, verifier-free RL), plan their thoughts, and audit whether
thinking helps. See the README for the command line; the library entry points are
:func:`ponder.load_model` (built-in names or paths), :mod:`ponder.lm` (the sampler and scoring)
and :mod:`ponder.data`.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``ponder.load_model`` without importing torch and transformers for ``import ponder`` alone.
    if name == "load_model":
        from ponder.models.lookup import load_model

        return load_model
    raise AttributeError(f"module 'ponder' has no attribute {name!r}")
