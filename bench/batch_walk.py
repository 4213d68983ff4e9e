"""The walk of sampled token ids to the training batch: functions, files and containers on the way.

Profiles one step's rollout of RLP and of GRPO (tiny model, CPU) and lists, from the call that
samples to the return of the training batch, every ponder function entered (distinct), the files
they live in, how often the walk enters ``lm/padding.py`` and ``lm/decode.py`` (runs of calls in
another file in between count as a new entry; the decode loop's repeats are one entry each time it
is re-entered from outside), and the ponder containers the ids are returned in, in order.

Run from a checkout: ``PYTHONPATH=src python bench/batch_walk.py`` (works on the code before the
batch contract too, to compare).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

import ponder

ROOT = str(Path(ponder.__file__).parent)


class Walk:
    """Records ponder calls (and ponder dataclasses returned) between a start and an end function."""

    def __init__(self, start: set[str], end: set[str]):
        self.start, self.end = start, end
        self.active, self.done = False, False
        self.calls: list[tuple[str, str]] = []
        self.containers: list[str] = []

    def __call__(self, frame, event, arg):
        code = frame.f_code
        if not code.co_filename.startswith(ROOT) or self.done:
            return
        where = (code.co_filename[len(ROOT) + 1 :], code.co_name)
        if event == "call":
            if not self.active and code.co_name in self.start:
                self.active = True
            if self.active:
                self.calls.append(where)
        elif event == "return" and self.active:
            if dataclasses.is_dataclass(arg) and type(arg).__module__.startswith("ponder"):
                name = type(arg).__name__
                if not self.containers or self.containers[-1] != name:
                    self.containers.append(name)
            if code.co_name in self.end:
                self.done = True

    def report(self, title: str) -> None:
        functions = list(dict.fromkeys(self.calls))
        files = list(dict.fromkeys(f for f, _ in self.calls))
        entries = {f: 0 for f in ("lm/padding.py", "lm/decode.py")}
        last = None
        for f, _ in self.calls:
            if f != last and f in entries:
                entries[f] += 1
            last = f
        print(f"## {title}")
        print(f"functions entered (distinct): {len(functions)}; files: {len(files)}")
        print(f"entries into lm/padding.py: {entries['lm/padding.py']}, lm/decode.py: {entries['lm/decode.py']}")
        print("containers returned, in order: " + " -> ".join(self.containers))
        print("files: " + ", ".join(files))
        print()


def _tiny():
    from ponder.lm.delimiters import ensure_think_tokens
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    model = build_tiny_model(tok, TinyArch(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), seed=0)
    ensure_think_tokens(model, tok)
    return model.eval(), tok


def one_step(trainer, walk: Walk) -> Walk:
    """``walk`` over one step's rollout of ``trainer``'s recipe."""
    sys.setprofile(walk)
    try:
        trainer.recipe.make_step(trainer)
    finally:
        sys.setprofile(None)
    return walk


def rlp(tmp: Path) -> None:
    from ponder.rl.rlp import RLPConfig, RLPTrainer

    model, tok = _tiny()
    cfg = RLPConfig(steps=1, docs_per_step=2, group_size=2, max_thought_tokens=4, context_length=16, micro_batch=None)
    source = SimpleNamespace(stream=lambda: iter([("12+34=46", None), ("5+6=11", None)] * 2))
    trainer = RLPTrainer(model, tok, source, cfg, tmp / "rlp")
    one_step(trainer, Walk({"generate"}, {"make_rollout"})).report("RLP: sampling -> batch")


def grpo(tmp: Path) -> None:
    from ponder.data.synthetic import Addition
    from ponder.rl.grpo import GRPOConfig, GRPOTrainer

    model, tok = _tiny()
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, max_thought_tokens=4, max_answer_tokens=3, filter_hard=False)
    cfg = cfg.model_copy(update={"filter_equal": False})
    trainer = GRPOTrainer(model, tok, Addition(2), cfg, tmp / "grpo")
    one_step(trainer, Walk({"think_then_answer", "complete"}, {"completion_batch"})).report("GRPO: sampling -> batch")


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        rlp(Path(d))
        grpo(Path(d))
