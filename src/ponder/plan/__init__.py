"""Thoughts-as-Planning: edit a reasoning chain by planning in a learned latent world model.

state.py (chains and their rendering), edits.py (edit operators, payload vocabulary),
env.py (the LM as environment, with call accounting), encoder.py (frozen-LM features),
world_model.py (latent model and its losses), planners.py (MPPI, latent gradient, imagination
policy), elite.py (the elite roots planners edit from), explore.py (exploration over edit
operations), baselines.py (random, hill-climbing, LM-proposed evolution), search.py (curves),
dspy_lm.py and dspy_program.py (DSPy's optimizers on ponder's model).
"""

from ponder.plan.edits import Edit, EditRejected, Vocabulary, apply_edit, candidate_edits, mine_vocabulary
from ponder.plan.env import Outcome, PlanEnv, PlanInputError
from ponder.plan.state import FORMATS, Chain, render_prompt

__all__ = [
    "Chain",
    "render_prompt",
    "FORMATS",
    "Edit",
    "EditRejected",
    "apply_edit",
    "candidate_edits",
    "Vocabulary",
    "mine_vocabulary",
    "PlanEnv",
    "Outcome",
    "PlanInputError",
]
