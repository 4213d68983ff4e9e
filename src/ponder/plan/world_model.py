"""The latent world model: encoder, edit embedding, residual transition and reward head.

``z = E(phi(x, c))``, ``z' = z + f([z, e(a)])``, ``r = R(z)``, where ``phi`` are frozen-LM
features (:mod:`ponder.plan.encoder`). Trained on real transitions with three losses, each
a pure function below (tested against hand computations):

* :func:`consistency_loss`: H-step latent rollouts match stop-gradient encodings of the
  chains actually reached (TD-MPC2's latent consistency, decayed by ``rho`` per step);
* :func:`reward_loss`: ``R`` of encoded and of rolled-out latents regresses the real values;
* :func:`bisimulation_loss`: latent distances between states track the difference of their
  outcomes (plus, optionally, ``gamma`` times the distance of their successors), so states
  that make the LM respond alike sit close together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ponder.plan.edits import Edit
from ponder.plan.state import Chain

# ---------------------------------------------------------------- pure losses


def transition(z: Tensor, e: Tensor, f) -> Tensor:
    """Residual transition ``z + f(cat(z, e))``; ``z [..., d]``, ``e [..., k]``."""
    return z + f(torch.cat([z, e], dim=-1))


def consistency_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, rho: float = 0.5) -> Tensor:
    """``sum_t rho^t * mean_b ||pred[t,b] - sg(target[t,b])||^2 / d`` over valid ``(t, b)``, divided by ``H``.

    ``pred``, ``target`` ``[H, B, d]``; ``mask`` ``[H, B]`` (1 = the step exists). Gradients
    never reach ``target``.
    """
    err = (pred - target.detach()).pow(2).mean(-1)  # [H, B]
    if mask is None:
        mask = torch.ones_like(err)
    mask = mask.to(err.dtype)
    per_step = (err * mask).sum(1) / mask.sum(1).clamp(min=1)  # [H]
    weights = rho ** torch.arange(err.shape[0], dtype=err.dtype, device=err.device)
    return (weights * per_step).sum() / err.shape[0]


def reward_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over valid entries; any matching shapes."""
    err = (pred - target).pow(2)
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def bisimulation_loss(
    z: Tensor, r: Tensor, next_z: Tensor | None = None, gamma: float = 0.0, scale: float = 1.0
) -> Tensor:
    """Mean over pairs ``i < j`` of ``(||z_i - z_j|| - scale * (|r_i - r_j| + gamma * ||sg(z'_i) - sg(z'_j)||))^2``.

    ``z [N, d]``, ``r [N]``, ``next_z [N, d]`` (optional successors; their distance is a
    target, so they get no gradient). 0 for fewer than two states.
    """
    n = z.shape[0]
    if n < 2:
        return z.sum() * 0.0
    i, j = torch.triu_indices(n, n, offset=1, device=z.device)
    dist = (z[i] - z[j]).pow(2).sum(-1).clamp(min=1e-12).sqrt()
    target = (r[i] - r[j]).abs()
    if next_z is not None and gamma:
        nz = next_z.detach()
        target = target + gamma * (nz[i] - nz[j]).pow(2).sum(-1).sqrt()
    return (dist - scale * target.detach()).pow(2).mean()


# ---------------------------------------------------------------- the model


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ELU(), nn.Linear(h, o))


class WorldModel(nn.Module):
    """``heads`` reward heads form an ensemble (mean = prediction, spread = uncertainty). Shapes: chain features ``[B, Dc]`` -> ``z [B, d]``; edit features ``[B, De]`` -> ``e [B, k]``."""

    def __init__(
        self,
        chain_dim: int,
        edit_dim: int,
        latent: int = 64,
        edit_latent: int = 32,
        hidden: int = 128,
        heads: int = 3,
        n_ops: int = 0,
    ):
        super().__init__()
        self.encoder = nn.Sequential(nn.LayerNorm(chain_dim), _mlp(chain_dim, hidden, latent))
        self.edit_proj = nn.Sequential(nn.LayerNorm(edit_dim), nn.Linear(edit_dim, edit_latent))
        # The operation's own embedding, read from the one-hot code in the last ``n_ops`` edit features:
        # after the LayerNorm above, one code among hundreds of content features is a faint signal, and
        # what an operation does (a deletion vs a rewrite of the same step) must be learnt from a few edits.
        self.n_ops = n_ops
        self.op_embed = nn.Linear(n_ops, edit_latent, bias=False) if n_ops else None
        self.dynamics = _mlp(latent + edit_latent, hidden, latent)
        self.reward_heads = nn.ModuleList(_mlp(latent, hidden, 1) for _ in range(heads))
        self.latent = latent

    def encode(self, feats: Tensor) -> Tensor:
        return self.encoder(feats)

    def embed_edit(self, feats: Tensor) -> Tensor:
        e = self.edit_proj(feats)
        return e if self.op_embed is None else e + self.op_embed(feats[..., -self.n_ops :])

    def step(self, z: Tensor, e: Tensor) -> Tensor:
        return transition(z, e, self.dynamics)

    def rewards(self, z: Tensor) -> Tensor:
        """``[heads, ...]``: every reward head's prediction (an ensemble: their spread is the uncertainty)."""
        return torch.stack([h(z).squeeze(-1) for h in self.reward_heads])

    def reward(self, z: Tensor) -> Tensor:
        return self.rewards(z).mean(0)

    def optimistic_reward(self, z: Tensor, kappa: float) -> Tensor:
        """Mean plus ``kappa`` standard deviations of the heads (optimism where the model is unsure)."""
        r = self.rewards(z)
        return r.mean(0) + kappa * r.std(0, unbiased=False)


# ---------------------------------------------------------------- data and training


@dataclass
class Segment:
    """A real trajectory: ``chains[0] -edits[0]-> chains[1] ...`` with the value of every chain."""

    chains: list[Chain]
    edits: list[Edit]
    values: list[float]


@dataclass
class Replay:
    segments: list[Segment] = field(default_factory=list)

    def add(self, chains, edits, values) -> None:
        if len(chains) != len(edits) + 1 or len(values) != len(chains):
            raise ValueError("a segment needs one more chain (and value) than edits")
        self.segments.append(Segment(list(chains), list(edits), list(values)))

    def windows(self, horizon: int) -> list[Segment]:
        """Every sub-trajectory of up to ``horizon`` edits (starting at each chain with a successor)."""
        out = []
        for s in self.segments:
            for t in range(len(s.edits)):
                h = min(horizon, len(s.edits) - t)
                out.append(Segment(s.chains[t : t + h + 1], s.edits[t : t + h], s.values[t : t + h + 1]))
        return out

    def __len__(self) -> int:
        return sum(len(s.edits) for s in self.segments)


@dataclass
class LossWeights:
    consistency: float = 1.0
    reward: float = 1.0
    bisim: float = 0.1
    rho: float = 0.5
    gamma: float = 0.0


def world_model_loss(
    model: WorldModel,
    chain_feats: Tensor,
    edit_feats: Tensor,
    values: Tensor,
    mask: Tensor,
    w: LossWeights = LossWeights(),
) -> tuple[Tensor, dict]:
    """Total loss on a batch of windows.

    ``chain_feats [B, H+1, Dc]``, ``edit_feats [B, H, De]``, ``values [B, H+1]``, ``mask [B, H+1]``
    (1 where the window has that chain; the first chain always exists). A NaN value marks a chain
    that was reached but never evaluated (inside a multi-edit plan): it takes part in the latent
    consistency, not in the reward and bisimulation terms.
    """
    b, h1, _ = chain_feats.shape
    known = mask.bool() & ~values.isnan()  # a chain passed on the way to a verified one has no value
    values = values.nan_to_num(0.0)
    enc = model.encode(chain_feats)  # [B, H+1, d]
    z, rolled = enc[:, 0], [enc[:, 0]]
    for t in range(h1 - 1):
        z = model.step(z, model.embed_edit(edit_feats[:, t]))
        rolled.append(z)
    rolled = torch.stack(rolled, 1)  # [B, H+1, d]
    cons = (
        consistency_loss(rolled[:, 1:].transpose(0, 1), enc[:, 1:].transpose(0, 1), mask[:, 1:].T, w.rho)
        if h1 > 1
        else enc.sum() * 0.0
    )
    heads = len(model.reward_heads)
    rew = 0.5 * (
        reward_loss(model.rewards(enc), values.expand(heads, -1, -1), known.expand(heads, -1, -1))
        + reward_loss(model.rewards(rolled), values.expand(heads, -1, -1), known.expand(heads, -1, -1))
    )
    bis = bisimulation_loss(enc[known], values[known])
    total = w.consistency * cons + w.reward * rew + w.bisim * bis
    return total, {"consistency": float(cons.detach()), "reward": float(rew.detach()), "bisim": float(bis.detach())}


def batch_windows(windows: list[Segment], features, horizon: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pad windows to ``horizon`` edits: ``(chain_feats, edit_feats, values, mask)`` as :func:`world_model_loss` takes."""
    b = len(windows)
    chain_rows, edit_rows = [], []
    values = torch.zeros(b, horizon + 1)
    mask = torch.zeros(b, horizon + 1)
    for i, w in enumerate(windows):
        pad_c = w.chains + [w.chains[-1]] * (horizon + 1 - len(w.chains))
        chain_rows.append(pad_c)
        edit_rows.append(
            [(w.edits[t], w.chains[t]) if t < len(w.edits) else (w.edits[-1], w.chains[-2]) for t in range(horizon)]
        )
        values[i, : len(w.values)] = torch.tensor(w.values)
        mask[i, : len(w.values)] = 1
    cf = features.chains([c for row in chain_rows for c in row]).view(b, horizon + 1, -1)
    ef = features.edits([e for row in edit_rows for e, _ in row], [c for row in edit_rows for _, c in row]).view(
        b, horizon, -1
    )
    return cf, ef, values, mask


def fit_world_model(
    model: WorldModel,
    replay: Replay,
    features,
    horizon: int = 3,
    steps: int = 100,
    lr: float = 3e-3,
    batch_size: int = 64,
    weights: LossWeights = LossWeights(),
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict:
    """``steps`` Adam steps on random minibatches of windows; returns the last step's losses."""
    windows = replay.windows(horizon)
    if not windows:
        return {}
    cf, ef, values, mask = batch_windows(windows, features, horizon)
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    parts = {}
    for _ in range(steps):
        idx = torch.randperm(len(windows), generator=gen)[:batch_size]
        loss, parts = world_model_loss(model, cf[idx], ef[idx], values[idx], mask[idx], weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return parts
