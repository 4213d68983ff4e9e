"""The smaller seed methods that train with next-token training on examples they build.

early_experience.py (Early experience: the policy's own actions at expert states, turned into imitation,
world-modelling and reflection examples, trained on). Its data side is :mod:`ponder.data.early_experience`;
the command is ``ponder early-experience`` (:mod:`ponder.jobs.early_experience`).
"""
