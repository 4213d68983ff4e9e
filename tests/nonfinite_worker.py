"""One rank of the non-finite-reward test: GRPO or TTRL where rank 1's rewards are NaN on step 1.

``python tests/nonfinite_worker.py JOB OUT.json`` under a launcher's environment; trains 2 steps and
rank 0 writes the summary.
"""

import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
from dist_worker import trainer_for  # noqa: E402


def nan_on_rank_one_at_step_one(recipe, engine):
    rewards = recipe.rewards

    def patched(problems, comp, texts, group_ids):
        mixed, metrics, no_answer = rewards(problems, comp, texts, group_ids)
        if engine.rank == 1 and engine.step == 0:
            mixed = torch.full_like(mixed, float("nan"))
        return mixed, metrics, no_answer

    recipe.rewards = patched


if __name__ == "__main__":
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = trainer_for(sys.argv[1], run_dir, steps=2)
        nan_on_rank_one_at_step_one(trainer.recipe, trainer)
        summary = trainer.train(progress=False)
    if trainer.rank == 0:
        with open(sys.argv[2], "w") as f:
            json.dump(summary, f)
