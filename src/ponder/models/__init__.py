"""The model names users type, resolved to files and loaded; the built-in tiny models and their cache.

lookup.py (``tiny``, ``tiny-lazy``, ``tiny@S``, ``smollm2-135m``, the random-init shapes, a Hugging Face
directory, a LoRA adapter directory or a ``.gguf`` file -> an :class:`~ponder.lm.load.LM`: :func:`load_model`,
which is ``ponder.load_model``), tiny_base.py (the recipe ``ponder base`` trains the tiny models with, and the
cache that trains one on first use). Because a tiny model is trained when first asked for, this package sits
above :mod:`ponder.train` and :mod:`ponder.eval` and below the jobs; the model code itself (architectures,
loading a directory, the sampler) is :mod:`ponder.lm`.
"""

from ponder.models.lookup import BUILTIN_MODELS, SMOLLM2, load_model, model_path

__all__ = ["BUILTIN_MODELS", "SMOLLM2", "load_model", "model_path"]
