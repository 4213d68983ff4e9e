"""A bf16 EMA teacher (``--ema-dtype bf16``) against an fp32 one: how well it follows, and the reward it gives.

The policy drifts steadily for ``--steps`` optimizer steps (each weight moves ``--lr`` a step in a fixed
random direction, as Adam's normalized steps do) and three teachers follow it with ``--tau``: fp32,
bf16 rounded to nearest, and bf16 rounded stochastically (ponder's). Printed:

* ``followed``: the share of the fp32 teacher's movement each bf16 teacher made (projection on it; 1 = all
  of it, 0 = stalled) and ``error``: ``||phi - phi_fp32|| / ||phi_fp32 - phi_0||``;
* the information-gain reward's baseline term ``log p_EMA(x_t | x_<t)`` at every position of
  ``--docs`` documents of the demo task, from each bf16 teacher minus from the fp32 one (nats): the
  difference is the reward's error, since ``r = log p(x_t | x_<t, c) - log p_EMA(x_t | x_<t)``.
  ``bf16 weights, fp32 compute`` upcasts the stochastic teacher to fp32 for the forward: the part of
  the error that the weights' storage makes, not the bf16 arithmetic.

    OMP_NUM_THREADS=1 python bench/ema_dtype.py [--model tiny] [--steps 1000] [--tau 0.999] [--lr 1e-5]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ponder.data.registry import DEMO_TASK  # noqa: E402
from ponder.data.sources import make_source  # noqa: E402
from ponder.lm.padding import pad_id_of  # noqa: E402
from ponder.models.lookup import load_model  # noqa: E402
from ponder.rl.ema import EMATeacher, ema_update_  # noqa: E402
from ponder.rl.rollout import doc_logprobs  # noqa: E402


def follow(model, steps: int, tau: float, lr: float, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Teachers (fp32, bf16 nearest, bf16 stochastic) after ``steps`` EMA updates towards a steadily moving policy."""
    policy = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    direction = [torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1 for p in policy.parameters()]
    fp32 = EMATeacher.from_model(policy, tau)
    stochastic = EMATeacher.from_model(policy, tau, dtype=torch.bfloat16, seed=seed)
    nearest = copy.deepcopy(stochastic.model)
    for _ in range(steps):
        with torch.no_grad():
            for p, d in zip(policy.parameters(), direction):
                p.add_(lr * d)
        fp32.update(policy)
        stochastic.update(policy)
        ema_update_(list(nearest.parameters()), list(policy.parameters()), tau, stochastic=False)
    return {"fp32": fp32.model, "bf16 nearest": nearest, "bf16 stochastic": stochastic.model}


def movement(start, teachers: dict) -> dict[str, dict]:
    """Per bf16 teacher: the share of the fp32 teacher's movement it made, and its distance from it, relative."""
    flat = lambda m: torch.cat([p.detach().float().flatten() for p in m.parameters()])  # noqa: E731
    phi0, ref = flat(start), flat(teachers["fp32"])
    moved = ref - phi0
    out = {}
    for name, teacher in teachers.items():
        if name == "fp32":
            continue
        phi = flat(teacher)
        out[name] = {
            "followed": float((phi - phi0) @ moved / (moved @ moved)),
            "error": float((phi - ref).norm() / moved.norm()),
        }
    out["fp32"] = {"moved_norm": float(moved.norm()), "moved_max": float(moved.abs().max())}
    return out


def reward_differences(teachers: dict, tokenizer, docs: list[list[int]]) -> dict[str, dict]:
    """``log p_EMA(x_t | x_<t)`` at every position of ``docs``: each bf16 teacher's minus the fp32 teacher's (nats)."""
    pad = pad_id_of(tokenizer)

    def baseline(model) -> torch.Tensor:
        return torch.cat([lp[1:] for lp in doc_logprobs(model, docs, pad).logp])

    ref = baseline(teachers["fp32"])
    variants = {k: v for k, v in teachers.items() if k != "fp32"}
    variants["bf16 weights, fp32 compute"] = copy.deepcopy(teachers["bf16 stochastic"]).float()
    out = {}
    for name, model in variants.items():
        d = baseline(model) - ref
        out[name] = {"mean_abs": float(d.abs().mean()), "max_abs": float(d.abs().max()), "mean": float(d.mean())}
    out["positions"] = int(ref.numel())
    out["baseline_mean_abs"] = float(ref.abs().mean())
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--tau", type=float, default=0.999)
    ap.add_argument("--lr", type=float, default=1e-5, help="each weight's movement per policy step")
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    lm = load_model(args.model, device="cpu")
    model = lm.model.float().eval()
    texts = itertools.islice(make_source(None, DEMO_TASK, 0).stream(), args.docs)
    docs = [lm.tokenizer(text)["input_ids"] for text, _ in texts]
    teachers = follow(model, args.steps, args.tau, args.lr)
    result = {
        "settings": vars(args) | {"json": str(args.json) if args.json else None},
        "movement": movement(model, teachers),
        "reward": reward_differences(teachers, lm.tokenizer, docs),
    }
    m, r = result["movement"], result["reward"]
    print(f"fp32 teacher moved {m['fp32']['moved_norm']:.4g} (max {m['fp32']['moved_max']:.3g} a weight)")
    print("| teacher | followed | error | reward mean |diff| nats | max |diff| | mean diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("bf16 nearest", "bf16 stochastic", "bf16 weights, fp32 compute"):
        mv = m.get(name, {"followed": float("nan"), "error": float("nan")})
        rw = r[name]
        print(
            f"| {name} | {mv['followed']:.3f} | {mv['error']:.3f} | {rw['mean_abs']:.2e} | {rw['max_abs']:.2e} | {rw['mean']:+.2e} |"
        )
    print(f"positions: {r['positions']}; mean |log p_EMA| there: {r['baseline_mean_abs']:.3f} nats")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
