"""Why do the world-model planners end low on SmolLM2? Measures each suspect on one pool of chains.

The pool: the comparison's start chain (``instruction`` mode), ``--pool - 1`` single edits of it,
drawn as every planner draws candidates (stratified over operations), and the four fixed chains of
``bench/plan_probe_smol.py`` (one or three solved exemplars, three ``Q: A:`` exemplars, an
instruction and an exemplar: chains of known, different accuracy). Each chain is scored per
input on ``--n-train`` training problems and on the ``--n-heldout`` held-out problems the comparison
measures (one batched pass each; per-input scores from ``PlanEnv.per_input``). Then, without the LM:

* **evaluation noise**: the planning value on ``n`` training inputs (``n`` = 4, the comparison's
  setting, 8, 16; random subsets) against the held-out accuracy: Spearman correlation over the
  pool, and the held-out accuracy of the chain the value picks (mean over subsets) beside the
  pool's best and mean; also with the value's two terms apart (accuracy, log-likelihood);
* **encoder features**: how far apart the frozen-LM features of different chains lie (relative
  to their norm) and whether a ridge regression on them predicts the value (leave-one-out);
* **world-model fit**: the world model fitted (as the planners fit it) on ``k`` transitions
  start -> child (k = the warm-up's 6, then 12; single edits only) and asked to rank the other children: Spearman of
  its prediction with the real value, against the per-operation mean of the same ``k``;
* **candidate generation**: how many single edits beat the start by more than the elite's margin.

    OMP_NUM_THREADS=1 python bench/plan_diagnose_smol.py --task add1 --seed 0 --json diag.json [--chat-template on]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ponder.data.registry import get_task
from ponder.jobs.plan import build_vocabulary, default_start
from ponder.lm.thinking import ThinkSettings
from ponder.models.lookup import load_model
from ponder.plan.edits import ALL_OPS, candidate_edits
from ponder.plan.encoder import LMFeatures
from ponder.plan.env import LOGLIK_SCALE, PlanEnv
from ponder.plan.world_model import Replay, WorldModel, fit_world_model
from ponder.report.stats import rank_correlation

sys.path.insert(0, str(Path(__file__).parent))
from plan_probe_smol import probe_chains  # noqa: E402  (a sibling script, not a package)


def spearman(a, b) -> float:
    """Rank correlation (:func:`ponder.report.stats.rank_correlation`); 0 when either side is constant or has one value."""
    if len(a) < 2:
        return 0.0
    rho = rank_correlation(a, b)
    return 0.0 if math.isnan(rho) else rho


def value_terms(correct: np.ndarray, loglik: np.ndarray, idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over chains ``[C]``: the accuracy, the log-likelihood term and the planning value on inputs ``idx``."""
    acc = correct[:, idx].mean(1)
    ll = np.clip(1 + loglik[:, idx].mean(1) / LOGLIK_SCALE, 0, 1)
    return acc, ll, 0.5 * (acc + ll)


def noise_table(correct, loglik, heldout, sizes=(4, 8, 16), draws=200, seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = correct.shape[1]
    rows = []
    for size in sizes:
        if size > n:
            continue
        stats = {"value": [], "accuracy": [], "loglik": []}
        picked = {k: [] for k in stats}
        for d in range(draws):
            idx = np.arange(size) if d == 0 and size == 4 else rng.choice(n, size, replace=False)
            acc, ll, val = value_terms(correct, loglik, idx)
            for name, x in (("value", val), ("accuracy", acc), ("loglik", ll)):
                stats[name].append(spearman(x, heldout))
                best = np.flatnonzero(x == x.max())
                picked[name].append(float(heldout[best].mean()))  # ties: any of them, on average
        rows.append(
            {
                "n_train": size,
                **{f"spearman_{k}": float(np.mean(v)) for k, v in stats.items()},
                **{f"heldout_of_pick_{k}": float(np.mean(v)) for k, v in picked.items()},
            }
        )
    return rows


def ridge_loo(x: np.ndarray, y: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """Leave-one-out predictions of a ridge regression of ``y [N]`` on standardised ``x [N, D]``."""
    preds = np.zeros_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        mu, sd = x[keep].mean(0), x[keep].std(0) + 1e-6
        a = (x[keep] - mu) / sd
        w = np.linalg.solve(a @ a.T + lam * np.eye(len(a)), y[keep] - y[keep].mean())
        preds[i] = ((x[i] - mu) / sd) @ (a.T @ w) + y[keep].mean()
    return preds


def world_model_ranking(features, start, edits, chains, values, k: int, splits: int, seed: int) -> dict:
    """Fit on ``k`` start -> child transitions, rank the rest: Spearman of the model and of per-op means."""
    wm_r, op_r, top = [], [], []
    n = len(chains)
    for s in range(splits):
        order = random.Random(seed + s).sample(range(n), n)
        fit, test = order[:k], order[k:]
        torch.manual_seed(seed + s)
        model = WorldModel(features.chain_dim, features.edit_dim, latent=64, n_ops=len(ALL_OPS))
        replay = Replay()
        for i in fit:
            replay.add([start, chains[i]], [edits[i]], [values["start"], values["pool"][i]])
        fit_world_model(model, replay, features, horizon=3, steps=150, seed=seed + s)
        with torch.no_grad():
            z0 = model.encode(features.chains([start])).expand(len(test), -1)
            pred = model.reward(
                model.step(z0, model.embed_edit(features.edits([edits[i] for i in test], [start] * len(test))))
            )
        real = np.array([values["pool"][i] for i in test])
        wm_r.append(spearman(pred.numpy(), real))
        top.append(float(real[int(pred.argmax())] - values["start"]))
        by_op: dict[str, list[float]] = {}
        for i in fit:
            by_op.setdefault(edits[i].op, []).append(values["pool"][i])
        overall = float(np.mean([values["pool"][i] for i in fit]))
        op_pred = np.array([np.mean(by_op.get(edits[i].op, [overall])) for i in test])
        op_r.append(spearman(op_pred, real))
    return {
        "k": k,
        "spearman_world_model": float(np.mean(wm_r)),
        "spearman_op_mean": float(np.mean(op_r)),
        "gain_of_world_model_pick": float(np.mean(top)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="add1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=16, help="chains: the start and pool - 1 single edits of it (+ 4 fixed)")
    p.add_argument("--n-train", type=int, default=12)
    p.add_argument("--n-heldout", type=int, default=16)
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--chat-template", default="off", choices=("auto", "on", "off"), help="how chains reach the model")
    p.add_argument("--json", metavar="PATH")
    p.add_argument(
        "--features",
        metavar="PATH",
        help="also save the pool's chain features, the single edits' features and the scores (.npz): world-model "
        "fits can then be tried without the LM",
    )
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    lm = load_model(a.model)
    task = get_task(a.task)
    vocab, _ = build_vocabulary(lm, task, a.seed, n_train=a.n_train)
    start = default_start(vocab, "instruction")
    env = PlanEnv(
        lm,
        task,
        n_train=a.n_train,
        n_heldout=a.n_heldout,
        seed=a.seed,
        think_settings=ThinkSettings(chat_template=a.chat_template),
    )
    rng = random.Random(a.seed)
    cands = candidate_edits(start, vocab, rng, a.pool - 1, env.accept)
    edits, chains = [e for e, _ in cands], [c for _, c in cands]
    fixed = {k: c for k, c in probe_chains(vocab).items() if k != "bare"}
    correct, loglik, heldout = [], [], []
    for i, chain in enumerate([start] + chains + list(fixed.values())):
        tr = env.per_input(chain, env.train)
        ho = env.per_input(chain, env.heldout)
        correct.append(tr.correct)
        loglik.append(tr.loglik)
        heldout.append(float(np.mean(ho.correct)))
        print(
            f"chain {i:2d} train acc {np.mean(tr.correct):.3f} heldout {heldout[-1]:.3f}  {time.time() - t0:.0f} s",
            flush=True,
        )
    correct, loglik, heldout = np.array(correct), np.array(loglik), np.array(heldout)
    _, _, value4 = value_terms(correct, loglik, np.arange(4))  # the comparison's own minibatch: the first 4
    noise = noise_table(correct, loglik, heldout, sizes=(4, 8, a.n_train), seed=a.seed)
    n_edits = len(chains) + 1  # the world-model fit reads the single edits only; the noise the whole pool
    features = LMFeatures(lm, [pr.prompt for pr in env.train[:2]])
    phi = features.chains([start] + chains + list(fixed.values())).numpy()
    dist = np.linalg.norm(phi[:, None] - phi[None], axis=-1)[np.triu_indices(len(phi), 1)]
    ridge = ridge_loo(phi, value4)
    if a.features:
        edit_feats = features.edits(edits, [start] * len(edits)).numpy()
        np.savez_compressed(a.features, chains=phi, edits=edit_feats, correct=correct, loglik=loglik, heldout=heldout)
    values = {"start": float(value4[0]), "pool": [float(v) for v in value4[1:n_edits]]}
    wm = [world_model_ranking(features, start, edits, chains, values, k, 5, a.seed) for k in (6, 10)]
    gains = value4[1:n_edits] - value4[0]
    by_op: dict[str, list[float]] = {}
    for e, g in zip(edits, gains):
        by_op.setdefault(e.op, []).append(float(g))
    out = {
        "task": a.task,
        "seed": a.seed,
        "chat_template": a.chat_template,
        "pool": len(chains) + 1,
        "seconds": round(time.time() - t0),
        "start": start.to_json(),
        "heldout_accuracy": {"start": float(heldout[0]), "best": float(heldout.max()), "mean": float(heldout.mean())},
        "noise": noise,
        "features": {
            "relative_pairwise_distance_median": float(np.median(dist) / np.linalg.norm(phi, axis=1).mean()),
            "ridge_loo_spearman_value4": spearman(ridge, value4),
            "ridge_loo_spearman_heldout": spearman(ridge, heldout),
        },
        "world_model": wm,
        "candidates": {
            "beat_start_by_margin": int((gains > a.margin).sum()),
            "of": len(gains),
            "mean_gain_by_op": {k: round(float(np.mean(v)), 3) for k, v in sorted(by_op.items())},
        },
        "chains": [
            {
                "chain": label,
                "value4": float(value4[i]),
                "heldout": float(heldout[i]),
                "train_accuracy": float(correct[i].mean()),
            }
            for i, label in enumerate(["start"] + [e.describe() for e in edits] + list(fixed))
        ],
    }
    print(json.dumps({k: v for k, v in out.items() if k != "chains"}, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
