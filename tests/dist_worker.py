"""One rank of the data-parallel tests: a few steps of rlp, grpo or ttrl on a tiny random model.

Run with the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); without it, it
runs single-process. ``python tests/dist_worker.py JOB RUN_DIR OUT.pt [MODE [STEPS]]``: rank 0 saves
the final parameters (and the EMA teacher's, for rlp) and the run's summary. ``MODE`` is the
engine's ``data_parallel`` (``ddp`` or ``fsdp``); a run directory with a checkpoint is resumed.
"""

import os
import sys

import torch

ARCH = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


def trainer_for(job: str, run_dir: str, steps: int = 3, mode: str = "ddp"):
    from ponder.data.sources import TaskSource
    from ponder.data.synthetic import Addition
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model
    from ponder.rl.grpo import GRPOConfig, GRPOTrainer
    from ponder.rl.rlp import RLPConfig, RLPTrainer
    from ponder.rl.ttrl import TTRLConfig, TTRLTrainer

    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, TinyArch(**ARCH), seed=0)
    if job == "rlp":
        cfg = RLPConfig(
            steps=steps,
            docs_per_step=3,
            positions_per_doc=2,
            group_size=3,
            max_thought_tokens=6,
            context_length=32,
            lr=1e-3,
            ema_tau=0.9,
            temperature=1.0,
            data_parallel=mode,
            save_every=1,  # a run killed at a step resumes from the one before
        )
        return RLPTrainer(model, tok, TaskSource(Addition(2), seed=1), cfg, run_dir)
    # Three prompts per step: the ranks hold 2 and 1, so an unweighted average of per-rank means would differ.
    # The length term gives every group a reward spread, so every step trains.
    common = dict(
        steps=steps,
        prompts_per_step=3,
        pool_size=8,
        group_size=4,
        max_thought_tokens=6,
        max_answer_tokens=4,
        lr=1e-3,
        length_target=2,
        filter_hard=False,
        ppo_epochs=2,
        micro_batch=3,  # the ranks hold different numbers of parts; gradients are all-reduced in each one's last
        data_parallel=mode,
    )
    if job == "grpo":
        cfg = GRPOConfig(**common, reward="verifiable=1,length=1")
        return GRPOTrainer(model, tok, Addition(2), cfg, run_dir)
    cfg = TTRLConfig(**common, reward="majority_vote=1,length=1", train_samples=3)
    return TTRLTrainer(model, tok, Addition(2), cfg, run_dir)


def run(job: str, run_dir: str, steps: int = 3, mode: str = "ddp") -> tuple[dict, dict]:
    trainer = trainer_for(job, run_dir, steps, mode)
    summary = trainer.train(resume=True, progress=False)
    state = full_state(trainer.model)
    if job == "rlp":
        state.update({"ema." + k: v for k, v in full_state(trainer.recipe.ema.model).items()})
    return state, summary


def full_state(module) -> dict:
    """Every weight of ``module`` as a full tensor on every rank, sharded (FSDP2) or not (a collective when sharded)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().clone() for k, v in full.items()}


if __name__ == "__main__":
    mode = sys.argv[4] if len(sys.argv) > 4 else "ddp"
    params, summary = run(sys.argv[1], sys.argv[2], int(sys.argv[5]) if len(sys.argv) > 5 else 3, mode)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({"params": params, "summary": summary}, sys.argv[3])
