"""One module per ``ponder`` command: its settings model and its run function.

audit, corpus, demo, early_experience, eval, grpo (``grpo`` and ``ttrl``), lmeval_task (``export-task``),
plan, refine, rlp (``rlp`` and ``cpt``), thought_mdp, trelawney. ``ponder base`` runs the tiny models' recipe
in :mod:`ponder.models.tiny_base`; model names are resolved by :mod:`ponder.models`.
"""
