"""One module per job: its settings model and its run function, which a ``ponder`` command runs.

audit, corpus (``corpus build``), demo, early_experience, eval, grpo (``grpo`` and ``ttrl``), lmeval_task
(``export-task``), plan, rlp (``rlp`` and ``cpt``), thought_mdp, trelawney; refine has no command (the
experiment of ``bench/refine_filter.py``). ``ponder base`` runs the tiny models' recipe in
:mod:`ponder.models.tiny_base`; model names are resolved by :mod:`ponder.models`. A job may run another
(the demo runs RLP and CPT, early experience runs GRPO) but shares no helpers with it.
"""
