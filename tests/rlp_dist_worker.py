"""One rank of the data-parallel RLP test: a few steps on a tiny random model, parameters saved by rank 0.

Run with the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); without it,
it runs single-process. ``python tests/rlp_dist_worker.py RUN_DIR OUT.pt``.
"""

import os
import sys

import torch


def run(run_dir: str, steps: int = 3) -> dict:
    from ponder.data.sources import TaskSource
    from ponder.data.synthetic import Addition
    from ponder.data.windows import window_stream
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model
    from ponder.rl.rlp import RLPConfig, RLPTrainer

    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, TinyArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), seed=0)
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
    )
    trainer = RLPTrainer(model, tok, TaskSource(Addition(2), seed=1), cfg, run_dir)
    stream = window_stream(tok, trainer.source.stream(), cfg.context_length)
    for _ in range(steps):
        trainer.train_step(stream)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update({"ema." + k: v.detach().clone() for k, v in trainer.ema.model.state_dict().items()})
    return state


if __name__ == "__main__":
    params = run(sys.argv[1])
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(params, sys.argv[2])
