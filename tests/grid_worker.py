"""The first step's gradients of every cell of the loss grid, on this process's share (one rank of the grid test).

A cell is a recipe and its loss settings: GRPO's three reductions x KL on/off x micro-batch, and RLP's
KL on/off x next-token term on/off x reward-token weight (off, k = 1, k = 4) x micro-batch. Each cell
builds a fresh tiny model (seed 0), runs one engine step (no clipping) and keeps the accumulated
gradient, which DDP has averaged over ranks (FSDP2's sharded gradients are gathered whole).

``python tests/grid_worker.py OUT.pt MODE`` under a launcher's environment (RANK, WORLD_SIZE, ...);
rank 0 saves ``{cell: {name: grad}}``. Without one it runs single-process.
"""

import itertools
import os
import sys
import tempfile

import torch

ARCH = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
NO_CLIP = 1e9


def cells() -> list[tuple]:
    """``(recipe, settings)`` of every cell; the micro-batch runs in parts of unequal sizes across ranks."""
    out = []
    for reduce, kl, micro in itertools.product(("rlp", "token", "constant"), (0.0, 0.1), (None, 2)):
        out.append(("grpo", dict(loss_reduce=reduce, kl_coef=kl, micro_batch=micro)))
    # A model-based reward scored in batches that differ with the ranks (the 2-process drift).
    for micro in (None, 2):
        out.append(("grpo", dict(loss_reduce="rlp", kl_coef=0.0, micro_batch=micro, reward="self_certainty")))
    reward_token = ((0.0, 1), (0.5, 1), (0.5, 4))  # k = 4: some positions have fewer targets (the text ends)
    for kl, ntp, (rtw, k), micro in itertools.product((0.0, 0.1), (0.0, 0.3), reward_token, (None, 1)):
        out.append(
            (
                "rlp",
                dict(kl_coef=kl, next_token_weight=ntp, reward_token_weight=rtw, reward_tokens=k, micro_batch=micro),
            )
        )
    return out


def cell_name(recipe: str, settings: dict) -> str:
    return recipe + ":" + ",".join(f"{k}={v}" for k, v in settings.items())


def trainer_for(recipe: str, settings: dict, run_dir: str, mode: str):
    from ponder.data.sources import TaskSource
    from ponder.data.synthetic import Addition
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model
    from ponder.rl.grpo import GRPOConfig, GRPOTrainer
    from ponder.rl.rlp import RLPConfig, RLPTrainer

    tok = build_char_tokenizer()
    # fp64: the grid compares weightings to 1e-6, and in fp32 the rewards' rounding (1e-7 of a log-prob) is already
    # 1e-5 of the tiny model's advantages (differences of rewards), whatever the CPU's kernels.
    model = build_tiny_model(tok, TinyArch(**ARCH), seed=0).double()
    common = dict(steps=1, lr=1e-3, grad_clip=NO_CLIP, data_parallel=mode, ema_tau=0.9, **settings)
    if recipe == "rlp":
        cfg = RLPConfig(
            docs_per_step=3,  # the ranks hold 2 and 1 documents: an unweighted average of per-rank means differs
            positions_per_doc=2,
            group_size=3,
            max_thought_tokens=6,
            context_length=32,
            temperature=1.0,
            min_reward_spread=1e-3,  # a group of near-equal rewards turns float noise into advantages
            **common,
        )
        return RLPTrainer(model, tok, TaskSource(Addition(2), seed=1), cfg, run_dir)
    cfg = GRPOConfig(
        prompts_per_step=3,
        pool_size=8,
        group_size=4,
        max_thought_tokens=6,
        max_answer_tokens=4,
        length_target=2,
        filter_hard=False,
        **{"reward": "verifiable=1,length=1", **common},  # the length term gives every group a reward spread
    )
    return GRPOTrainer(model, tok, Addition(2), cfg, run_dir)


def first_step_gradients(recipe: str, settings: dict, mode: str = "ddp") -> dict:
    from torch.distributed.tensor import DTensor

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = trainer_for(recipe, settings, run_dir, mode)
        _perturbed_teacher(trainer)
        if trainer.sharded is not None:
            trainer.sharded.release()
        metrics = trainer.train_step()
        assert "skipped" not in metrics, metrics
        grads = {}
        for name, p in trainer.model.named_parameters():
            if p.grad is not None:
                g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
                grads[name] = g.detach().clone()
    return grads


def _perturbed_teacher(trainer) -> None:
    """Start the KL reference (GRPO) or EMA teacher (RLP) away from the policy: equal to it, the KL's gradient is 0."""
    recipe = trainer.recipe
    teacher = recipe.ref if hasattr(recipe, "ref") else recipe.ema
    teacher.initialize(trainer.model)
    teacher.model.to(
        torch.float64
    )  # RLP's teacher is kept in fp32 (--ema-dtype): its rounding would be the noise floor
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in teacher.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def run_grid(mode: str = "ddp") -> dict:
    torch.set_num_threads(1)
    return {cell_name(r, s): first_step_gradients(r, s, mode) for r, s in cells()}


if __name__ == "__main__":
    grads = run_grid(sys.argv[2] if len(sys.argv) > 2 else "ddp")
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(grads, sys.argv[1])
