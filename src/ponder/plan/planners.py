"""World-model planners: choose an edit in imagination, verify it with one real evaluation.

All three share :func:`plan_with_world_model`: a short warm-up of random edit walks (real,
counted) trains the world model; then each round the planner picks one edit of a root chain
without touching the LM, the resulting chain is evaluated for real, the transition joins the
replay buffer and the model is refined on it. The root is the best chain of an
:class:`~ponder.plan.elite.Elite` set that is not retired: chains enter it only by beating their
parent by more than a noise margin, and a root whose ``patience`` planned children all failed
to do so is retired, so a planner stranded on a plateau restarts from the next-best chain.
Exploration over edit operations (:mod:`ponder.plan.explore`) is shared too: the warm-up draws
each edit from the operations tried least so far (``cover_ops``), and every planner adds the
count-based bonus ``explore / (1 + n(op))`` to the rank quantile of its score of each candidate
(:func:`pick`: imagined return for MPPI, closeness to the latent optimum for the gradient
planner, the policy's logit), so the three explore alike.

* :class:`MPPIPlanner`: sequences of ``horizon`` edits (the first from the current
  candidates, the rest random edits of the texts they lead to) are rolled out in latent
  space and scored by the best predicted value along them (optimistic for the first edit,
  the one that is verified for real; the plain ensemble mean for the imagined rest); the
  distribution over first edits is re-weighted by ``softmax(return / temperature)`` (MPPI)
  for a few iterations, and the first edit with the highest mean return is chosen.
* :class:`GradientPlanner`: gradient ascent on ``R(z) - lam * ||z - z0||^2`` from the current
  latent, then the candidate whose predicted successor is nearest to the optimum.
* :class:`PolicyPlanner`: a policy over candidate edits (bilinear in ``z`` and ``e(a)``)
  trained by REINFORCE on imagined rollouts of the world model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ponder.plan.edits import Edit, EditRejected, Vocabulary, apply_edit, candidate_edits
from ponder.plan.elite import Elite
from ponder.plan.encoder import LMFeatures
from ponder.plan.explore import OpCounts
from ponder.plan.search import Search
from ponder.plan.state import Chain
from ponder.plan.world_model import LossWeights, Replay, WorldModel, fit_world_model


@dataclass
class PlannerConfig:
    horizon: int = 3
    candidates: int = 48
    samples: int = 64
    iterations: int = 3
    temperature: float = 0.1
    warmup_walks: int = 2
    elite: int = 8  # elite chains kept as roots to plan from
    patience: int = 3  # failed planned children after which a root is retired (restart from the next-best)
    margin: float = 0.02  # real-value gain over the parent a chain needs to enter the elite (noise of 8 inputs ~0.01)
    fit_steps: int = 150
    refit_steps: int = 30
    latent: int = 64
    grad_steps: int = 30
    grad_lr: float = 0.1
    grad_lam: float = 0.5
    policy_episodes: int = 24
    kappa: float = 1.0  # optimism: planners score mean + kappa * std of the reward ensemble
    explore: float = 1.0  # count-based bonus explore / (1 + n(op)), added to the rank quantile of a planner's scores
    explore_stalled_only: bool = True  # bonus only after `patience` planned edits in a row failed to enter the elite
    cover_ops: bool = False  # warm-up draws each edit from the operations tried least so far
    seed: int = 0


class _Latent:
    """What every planner needs: features, the model, candidates, latent rollouts."""

    def __init__(self, model: WorldModel, features: LMFeatures, vocab: Vocabulary, accept, cfg: PlannerConfig):
        self.model, self.features, self.vocab, self.accept, self.cfg = model, features, vocab, accept, cfg
        self.rng = random.Random(cfg.seed)

    def candidates(self, chain: Chain, k: int | None = None, imagined: bool = False) -> list[tuple[Edit, Chain]]:
        """Candidate edits; ``imagined`` ones (inside latent rollouts) skip the prompt-length check."""
        return candidate_edits(chain, self.vocab, self.rng, k or self.cfg.candidates, None if imagined else self.accept,
                               samples_per_op=1 if imagined else 2)

    @torch.no_grad()
    def z(self, chains: list[Chain]) -> torch.Tensor:
        return self.model.encode(self.features.chains(chains))

    def e(self, edits: list[Edit], chains: list[Chain]) -> torch.Tensor:
        return self.model.embed_edit(self.features.edits(edits, chains))


def pick(scores: torch.Tensor, bonus: torch.Tensor | None = None) -> int:
    """The candidate maximising its rank quantile under the planner's score plus the exploration bonus.

    Each planner scores candidates on its own scale (an imagined return, a latent distance, a
    logit); the rank quantile (0 for its least, 1 for its most preferred candidate) puts the
    bonus in the same unit for all three and is robust to outliers (an edit the model has never
    seen often lands far away in latent space). With no bonus this is the plain argmax.
    """
    if bonus is None or not bool(bonus.any()) or len(scores) < 2:
        return int(torch.argmax(scores))
    ranks = torch.empty(len(scores))
    ranks[torch.argsort(scores)] = torch.arange(len(scores), dtype=torch.float)
    return int(torch.argmax(ranks / (len(scores) - 1) + bonus))


class MPPIPlanner(_Latent):
    @torch.no_grad()
    def choose(self, chain: Chain, cands: list[tuple[Edit, Chain]], bonus: torch.Tensor | None = None) -> tuple[int, float]:
        cfg, m = self.cfg, self.model
        z0 = self.z([chain])  # [1, d]
        z1 = m.step(z0.expand(len(cands), -1), self.e([e for e, _ in cands], [chain] * len(cands)))  # [K, d]
        r1 = m.optimistic_reward(z1, cfg.kappa)  # [K]
        logits = torch.zeros(len(cands))
        gen = torch.Generator().manual_seed(self.rng.randrange(1 << 30))
        total, count = torch.zeros(len(cands)), torch.zeros(len(cands))
        for _ in range(cfg.iterations):
            first = torch.multinomial(torch.softmax(logits, 0), cfg.samples, replacement=True, generator=gen)
            returns = r1[first].clone()
            z = z1[first]
            texts = [cands[int(i)][1] for i in first]
            for _ in range(cfg.horizon - 1):
                steps = [self.candidates(t, 8, imagined=True) for t in texts]
                picks = [self.rng.choice(s) if s else None for s in steps]
                live = [k for k, p in enumerate(picks) if p is not None]
                if not live:
                    break
                e = self.e([picks[k][0] for k in live], [texts[k] for k in live])
                z[live] = m.step(z[live], e)
                returns[live] = torch.maximum(returns[live], m.reward(z[live]))
                texts = [picks[k][1] if picks[k] is not None else texts[k] for k in range(len(texts))]
            total.index_add_(0, first, returns)
            count.index_add_(0, first, torch.ones(len(first)))
            w = torch.softmax((returns - returns.max()) / cfg.temperature, 0)
            mass = torch.zeros(len(cands)).index_add_(0, first, w)
            logits = torch.log(mass + 1e-3)
        # Mean (not max) return per first edit: a max over samples favours the edits drawn most often.
        mean_return = torch.where(count > 0, total / count.clamp(min=1), r1)
        idx = pick(mean_return + 1e-3 * torch.softmax(logits, 0), bonus)
        return idx, float(m.reward(z1[idx]))


class GradientPlanner(_Latent):
    def choose(self, chain: Chain, cands: list[tuple[Edit, Chain]], bonus: torch.Tensor | None = None) -> tuple[int, float]:
        cfg, m = self.cfg, self.model
        z0 = self.z([chain])[0]
        target = z0.clone().requires_grad_(True)
        opt = torch.optim.SGD([target], lr=cfg.grad_lr)
        for _ in range(cfg.grad_steps):
            loss = -m.optimistic_reward(target, cfg.kappa) + cfg.grad_lam * (target - z0).pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            z1 = m.step(z0.expand(len(cands), -1), self.e([e for e, _ in cands], [chain] * len(cands)))
            idx = pick(-(z1 - target.detach()).pow(2).sum(-1), bonus)
            return idx, float(m.reward(z1[idx]))


class PolicyNet(torch.nn.Module):
    """``logit(a | z) = q(z) . e(a)`` over a candidate set; ``z [d]``, ``e [K, k]`` -> ``[K]``."""

    def __init__(self, latent: int, edit_latent: int):
        super().__init__()
        self.query = torch.nn.Sequential(torch.nn.Linear(latent, 64), torch.nn.ELU(), torch.nn.Linear(64, edit_latent))

    def forward(self, z, e):
        return e @ self.query(z)


class PolicyPlanner(_Latent):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        edit_latent = self.model.edit_proj[-1].out_features
        self.policy = PolicyNet(self.model.latent, edit_latent)
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=3e-3)

    def train_in_imagination(self, starts: list[Chain], episodes: int | None = None) -> float:
        """REINFORCE on world-model rollouts of ``horizon`` edits; reward = best predicted value gain."""
        m, cfg = self.model, self.cfg
        losses = []
        for _ in range(episodes or cfg.policy_episodes):
            chain = self.rng.choice(starts)
            with torch.no_grad():
                z = self.z([chain])[0]
                r0 = float(m.optimistic_reward(z, cfg.kappa))
            logps, best = [], r0
            for _ in range(cfg.horizon):
                cands = self.candidates(chain, 16, imagined=True)
                if not cands:
                    break
                with torch.no_grad():
                    e = self.e([a for a, _ in cands], [chain] * len(cands))
                dist = torch.distributions.Categorical(logits=self.policy(z, e))
                k = dist.sample()
                logps.append(dist.log_prob(k))
                with torch.no_grad():
                    z = m.step(z, e[k])
                    best = max(best, float(m.optimistic_reward(z, cfg.kappa)))
                chain = cands[int(k)][1]
            if logps:
                losses.append((best - r0, torch.stack(logps).sum()))
        if not losses:
            return 0.0
        gains = torch.tensor([g for g, _ in losses])
        adv = gains - gains.mean()
        loss = -(adv * torch.stack([lp for _, lp in losses])).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(gains.mean())

    def choose(self, chain: Chain, cands: list[tuple[Edit, Chain]], bonus: torch.Tensor | None = None) -> tuple[int, float]:
        with torch.no_grad():
            z = self.z([chain])[0]
            e = self.e([a for a, _ in cands], [chain] * len(cands))
            idx = pick(self.policy(z, e), bonus)
            return idx, float(self.model.reward(self.model.step(z, e[idx])))


PLANNERS = {"mppi": MPPIPlanner, "gradient": GradientPlanner, "policy": PolicyPlanner}


def plan_with_world_model(search: Search, start: Chain, vocab: Vocabulary, features: LMFeatures, method: str = "mppi",
                          cfg: PlannerConfig = PlannerConfig(), weights: LossWeights = LossWeights(),
                          walks: list[list[Edit]] | None = None) -> dict:
    """Run a world-model planner within ``search``'s call budget; returns training diagnostics.

    ``walks``: explicit warm-up walks (edit sequences applied from ``start``) in place of
    ``cfg.warmup_walks`` random ones.
    """
    if method not in PLANNERS:
        raise ValueError(f"unknown planner {method!r}; known: {sorted(PLANNERS)}")
    env = search.env
    torch.manual_seed(cfg.seed)
    model = WorldModel(features.chain_dim, features.edit_dim, latent=cfg.latent)
    planner = PLANNERS[method](model, features, vocab, env.accept, cfg)
    rng, replay = planner.rng, Replay()
    elite = Elite(cfg.elite, cfg.patience, cfg.margin)
    counts = OpCounts(cfg.explore)
    start_value = search.evaluate(start).value
    elite.admit(start, start_value)
    # Warm-up: walks of `horizon` real edits from the start chain (real, counted).
    for w in range(len(walks) if walks is not None else cfg.warmup_walks):
        chains, edits, values = [start], [], [start_value]
        for t in range(len(walks[w]) if walks is not None else cfg.horizon):
            if search.exhausted:
                break
            if walks is not None:
                try:
                    edit, chain = walks[w][t], apply_edit(chains[-1], walks[w][t])
                except EditRejected:
                    break
            else:
                cands = [(e, c) for e, c in planner.candidates(chains[-1]) if not env.seen(c)]
                if not cands:
                    break
                edit, chain = rng.choice(counts.least_tried(cands) if cfg.cover_ops else cands)
            values.append(search.evaluate(chain, edit).value)
            counts.record(edit)
            elite.admit(chain, values[-1], values[-2])
            chains.append(chain)
            edits.append(edit)
        if edits:
            replay.add(chains, edits, values)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    diag = {"fit": fit_world_model(model, replay, features, cfg.horizon, cfg.fit_steps, optimizer=opt, seed=cfg.seed)}
    stale = 0
    failed_in_a_row = 0  # planned edits since the last one that entered the elite
    while not search.exhausted and stale < 5:
        here = elite.root()
        here_value = elite.value(here)
        if method == "policy":
            planner.train_in_imagination([here] + [s.chains[-1] for s in replay.segments[-8:]])
        cands = [(e, c) for e, c in planner.candidates(here) if not env.seen(c)]
        if not cands:
            elite.fail(here, cfg.patience)  # nothing left to try here: retire it
            stale += 1
            continue
        stale = 0
        stalled = failed_in_a_row >= cfg.patience
        bonus = counts.bonus([e for e, _ in cands]) if stalled or not cfg.explore_stalled_only else None
        idx, predicted = planner.choose(here, cands, bonus)
        edit, chain = cands[idx]
        value = search.evaluate(chain, edit, predicted).value
        counts.record(edit)
        failed_in_a_row = 0 if elite.report(here, here_value, chain, value) else failed_in_a_row + 1
        replay.add([here, chain], [edit], [here_value, value])
        diag["fit"] = fit_world_model(model, replay, features, cfg.horizon, cfg.refit_steps, optimizer=opt,
                                      seed=cfg.seed + len(replay))
    diag["replay_transitions"] = len(replay)
    diag["encoder_forwards"] = features.forwards
    diag["elite"] = elite.to_json()
    diag["ops"] = counts.to_json()
    return diag
