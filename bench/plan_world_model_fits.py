"""Which fit of the planners' value ranks unseen single edits of SmolLM2's start chain? Offline, no LM.

Reads the features ``bench/plan_diagnose_smol.py --features`` saved (the start chain's and its
single edits' frozen-LM features, each chain's per-input scores on the training problems and
its held-out accuracy). Each split fits a candidate on ``k`` transitions start -> child (the
planners' warm-up is ``k`` = 6) and ranks the remaining children; reported per candidate and ``k``:
the Spearman correlation of its prediction with the children's real value (the comparison's
4-input planning value) and with their held-out accuracy, the value gain of the child it ranks
first, and the share of splits where that child beats the start by the elite's margin.

Candidates:

* ``world_model``: :class:`~ponder.plan.world_model.WorldModel` fitted as the planners fit it
  (150 steps of the three losses), predicting the child from the start's latent and the edit;
* ``op_mean``: the mean value of the fitted children with the same operation;
* ``ridge_edit``: :func:`~ponder.plan.value_head.ridge_fit` on the edit features (the gain over the
  start; no chain encoding needed);
* ``ridge_chain``: the same on the child chain's own features (one encoder forward per candidate);
* ``ridge_both``: on both.

A ridge name may carry its penalty per feature, ``ridge_edit:1`` (default 0.01).

    OMP_NUM_THREADS=1 python bench/plan_world_model_fits.py feats.npz --splits 40 --json fits.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ponder.plan.edits import ALL_OPS
from ponder.plan.value_head import ridge_fit, ridge_predict
from ponder.plan.world_model import Replay, WorldModel, fit_world_model
from ponder.report.tables import markdown_table

sys.path.insert(0, str(Path(__file__).parent))
from plan_diagnose_smol import spearman, value_terms  # noqa: E402  (a sibling script)


class SavedFeatures:
    """The :class:`~ponder.plan.encoder.LMFeatures` interface over saved rows: a chain is its row
    index in ``chains``, an edit its row index in ``edits``."""

    def __init__(self, chains: np.ndarray, edits: np.ndarray):
        self._c, self._e = torch.as_tensor(chains).float(), torch.as_tensor(edits).float()
        self.chain_dim, self.edit_dim = self._c.shape[1], self._e.shape[1]

    def chains(self, idx):
        return self._c[list(idx)]

    def edits(self, idx, _chains):
        return self._e[list(idx)]


def world_model_predict(feats: SavedFeatures, fit, values, test, seed: int, steps: int = 150) -> np.ndarray:
    """Fit the planners' world model on start (row 0) -> child ``fit`` transitions; predict children ``test``."""
    torch.manual_seed(seed)
    model = WorldModel(feats.chain_dim, feats.edit_dim, latent=64, n_ops=len(ALL_OPS))
    replay = Replay()
    for i in fit:
        replay.add([0, 1 + i], [i], [values[0], values[1 + i]])
    fit_world_model(model, replay, feats, horizon=3, steps=steps, seed=seed)
    with torch.no_grad():
        z0 = model.encode(feats.chains([0])).expand(len(test), -1)
        return model.reward(model.step(z0, model.embed_edit(feats.edits(test, None)))).numpy()


def predictions(name: str, data: dict, fit, test, seed: int) -> np.ndarray:
    values, edits, chains = data["value"], data["edits"], data["chains"]
    gains = values[1 + np.asarray(fit)] - values[0]
    if name == "world_model":
        return world_model_predict(data["feats"], fit, values, test, seed)
    if name == "op_mean":
        by_op: dict[int, list[float]] = {}
        for i, g in zip(fit, gains):
            by_op.setdefault(int(data["op"][i]), []).append(g)
        return np.array([np.mean(by_op.get(int(data["op"][i]), [gains.mean()])) for i in test])
    name, _, lam = name.partition(":")  # "ridge_edit:0.1": that penalty per feature
    x = {
        "ridge_edit": edits,
        "ridge_chain": chains[1 : 1 + len(edits)],
        "ridge_both": np.concatenate([edits, chains[1 : 1 + len(edits)]], 1),
    }[name]
    head = ridge_fit(torch.as_tensor(x[fit]).float(), torch.as_tensor(gains).float(), lam=float(lam or 1e-2))
    return ridge_predict(head, torch.as_tensor(x[test]).float()).numpy()


METHODS = ("world_model", "op_mean", "ridge_edit", "ridge_chain", "ridge_both")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features", help=".npz from bench/plan_diagnose_smol.py --features")
    p.add_argument("--ks", default="6,10,20")
    p.add_argument("--splits", type=int, default=40)
    p.add_argument("--n-value", type=int, default=4, help="training inputs of the planning value (the comparison's 4)")
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    z = np.load(a.features)
    n_edits = len(z["edits"])
    _, _, value = value_terms(z["correct"], z["loglik"], np.arange(a.n_value))
    ops = z["edits"][:, -len(ALL_OPS) :].argmax(1)
    data = {
        "value": value,
        "heldout": z["heldout"],
        "edits": z["edits"],
        "chains": z["chains"],
        "op": ops,
        "feats": SavedFeatures(z["chains"], z["edits"]),
    }
    t0 = time.time()
    rows = []
    for k in [int(x) for x in a.ks.split(",")]:
        if k >= n_edits - 2:
            print(f"k = {k}: only {n_edits} single edits saved; skipped", file=sys.stderr)
            continue
        for name in a.methods.split(","):
            sv, sh, gain, hit = [], [], [], []
            for s in range(a.splits):
                order = random.Random(s).sample(range(n_edits), n_edits)
                fit, test = order[:k], order[k:]
                pred = predictions(name, data, fit, test, s)
                real = value[1 + np.asarray(test)]
                sv.append(spearman(pred, real))
                sh.append(spearman(pred, z["heldout"][1 + np.asarray(test)]))
                g = float(real[int(np.argmax(pred))] - value[0])
                gain.append(g)
                hit.append(g > a.margin)
            rows.append(
                {
                    "k": k,
                    "fit": name,
                    "spearman_value": float(np.mean(sv)),
                    "spearman_value_se": float(np.std(sv) / np.sqrt(len(sv))),
                    "spearman_heldout": float(np.mean(sh)),
                    "gain_of_pick": float(np.mean(gain)),
                    "pick_beats_start": float(np.mean(hit)),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    best_gain = float((value[1 : 1 + n_edits] - value[0]).max())
    share = float(((value[1 : 1 + n_edits] - value[0]) > a.margin).mean())
    print(
        markdown_table(
            ["k", "fit", "Spearman value (se)", "Spearman held-out", "gain of pick", "pick beats start"],
            [
                [r["k"], r["fit"], f"{r['spearman_value']:.2f} ({r['spearman_value_se']:.2f})"]
                + [f"{r['spearman_heldout']:.2f}", f"{r['gain_of_pick']:.3f}", f"{r['pick_beats_start']:.2f}"]
                for r in rows
            ],
        )
    )
    print(f"{n_edits} single edits; best gain {best_gain:.3f}; share beating the start {share:.2f}")
    if a.json:
        out = {
            "features": a.features,
            "edits": n_edits,
            "splits": a.splits,
            "best_gain": best_gain,
            "share_beating_start": share,
            "seconds": round(time.time() - t0),
            "rows": rows,
        }
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
