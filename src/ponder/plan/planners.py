"""World-model planners: choose edits in imagination, verify the chain they lead to with one real evaluation.

All three share :func:`plan_with_world_model`: a short warm-up (real, counted) trains the world
model, by default on single edits of the start chain, each of the operation tried least so far
(``warmup="star"``, ``cover_ops``: clean evidence of what each operation does from where planning
begins); then each round the planner picks a plan of edits of a root chain without touching the
LM, the chain it leads to is evaluated for real, the transition joins the replay buffer and the
model is refined on it. The root is the best chain of an :class:`~ponder.plan.elite.Elite` set
that is not retired: chains enter it only by beating their parent by more than a noise margin,
and a root whose ``patience`` planned children all failed to do so is retired, so a planner
stranded on a plateau restarts from the next-best chain. Exploration over edit operations
(:mod:`ponder.plan.explore`) is shared too: after ``patience`` failed plans in a row, every
planner adds the count-based bonus ``explore / (1 + n(op))`` to the rank quantile of its score
of each candidate (:func:`pick`: imagined return for MPPI, closeness to the latent optimum for
the gradient planner, the policy's logit), so the three explore alike.

* :class:`MPPIPlanner`: sequences of ``horizon`` edits (the first from the current candidates,
  each next one drawn by ``softmax(predicted value / temperature)`` among a few edits of the text
  so far) are rolled out in latent space and scored by the best predicted value along them
  (optimistic for the first edit; the plain ensemble mean for the imagined rest); the
  distribution over first edits is re-weighted by ``softmax(return / temperature)`` (MPPI) for a
  few iterations, and the first edit with the highest mean return is chosen. With
  ``value_head="ridge"`` the first edit's value is not the world model's but a ridge regression of
  the value gain on the edit's features, refitted on the verified single edits after every real
  evaluation (:mod:`ponder.plan.value_head`); the ensemble's spread still adds the optimism (it ranks
  SmolLM2's edits better offline, but cost more calls on the tiny model: not the default). Its best sequence
  may be verified whole, up to ``commit`` edits in one real evaluation, where the model predicts
  each extra edit to gain more than the margin (:func:`commit_length`), and only as far as a trust
  region allows: one edit after a failed plan, one more after each plan that entered the elite.
  This is where a world model saves real calls: a run of edits it has learnt to be good (say,
  deleting the derailing steps one by one) costs one evaluation instead of one per edit.
* :class:`GradientPlanner`: gradient ascent on ``R(z) - lam * ||z - z0||^2`` from the current
  latent, then the candidate whose predicted successor is nearest to the optimum.
* :class:`PolicyPlanner`: a policy over candidate edits (bilinear in ``z`` and ``e(a)``)
  trained by REINFORCE on imagined rollouts of the world model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from ponder.plan.edits import ALL_OPS, Edit, EditRejected, Vocabulary, apply_edit, candidate_edits
from ponder.plan.elite import Elite
from ponder.plan.encoder import LMFeatures
from ponder.plan.explore import OpCounts
from ponder.plan.search import Search
from ponder.plan.state import Chain
from ponder.plan.value_head import RidgeHead, ridge_fit, ridge_predict
from ponder.plan.world_model import LossWeights, Replay, WorldModel, fit_world_model


@dataclass
class PlannerConfig:
    horizon: int = 3
    candidates: int = 48
    samples: int = 64
    iterations: int = 3
    temperature: float = 0.1
    warmup: str = "star"  # "star": single edits of the start chain; "walks": random walks of `horizon` edits from it
    warmup_edits: int = 6  # real evaluations of the warm-up
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
    commit: int = 3  # MPPI: edits of its best imagined sequence it may verify in one real evaluation (1: one edit)
    explore: float = 1.0  # count-based bonus explore / (1 + n(op)), added to the rank quantile of a planner's scores
    explore_stalled_only: bool = True  # bonus only after `patience` planned edits in a row failed to enter the elite
    cover_ops: bool = True  # warm-up draws each edit from the operations tried least so far
    value_head: str = "world_model"  # MPPI's first-edit value: "world_model" or "ridge" (gain head on edit features)
    ridge_lam: float = 1.0  # the ridge gain head's penalty per feature (ponder.plan.value_head)
    seed: int = 0


class _Latent:
    """What every planner needs: features, the model, candidates, latent rollouts."""

    def __init__(self, model: WorldModel, features: LMFeatures, vocab: Vocabulary, accept, cfg: PlannerConfig):
        self.model, self.features, self.vocab, self.accept, self.cfg = model, features, vocab, accept, cfg
        self.rng = random.Random(cfg.seed)
        self.gain_head: RidgeHead | None = None  # set by fit_gain_head (value_head="ridge")

    def fit_gain_head(self, replay: Replay) -> int:
        """Refit the ridge gain head on the replay's verified single edits; returns how many it read.

        A ridge regression of ``value(child) - value(parent)`` on the edit's features: with the
        handful of transitions a planner has, it ranked unseen edits of SmolLM2's start chain better
        than the world model's latent step + reward head once the replay passed ~10 transitions
        (``bench/plan_world_model_fits.py``). Needs two transitions; until then the world model scores.
        """
        pairs = single_edit_gains(replay)
        if self.cfg.value_head != "ridge" or len(pairs) < 2:
            self.gain_head = None
            return len(pairs)
        x = self.features.edits([e for e, _, _ in pairs], [c for _, c, _ in pairs])
        self.gain_head = ridge_fit(x, torch.tensor([g for _, _, g in pairs]), lam=self.cfg.ridge_lam)
        return len(pairs)

    @torch.no_grad()
    def predicted_gain(self, chain: Chain, edits: list[Edit]) -> torch.Tensor | None:
        """``[K]`` the gain head's predicted value gain of each edit of ``chain``, or None without a head."""
        if self.gain_head is None:
            return None
        return ridge_predict(self.gain_head, self.features.edits(edits, [chain] * len(edits)))

    def candidates(self, chain: Chain, k: int | None = None, imagined: bool = False) -> list[tuple[Edit, Chain]]:
        """Candidate edits; ``imagined`` ones (inside latent rollouts) skip the prompt-length check."""
        return candidate_edits(
            chain,
            self.vocab,
            self.rng,
            k or self.cfg.candidates,
            None if imagined else self.accept,
            samples_per_op=1 if imagined else 2,
        )

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


Plan = list[tuple[Edit, Chain]]  # edits applied in turn from the root, each with the chain it leads to


def single_edit_gains(replay: Replay) -> list[tuple[Edit, Chain, float]]:
    """``(edit, parent chain, value(child) - value(parent))`` for every verified single edit in ``replay``
    (the edits of a multi-edit plan pass chains with no value: none of them is a pair)."""
    out = []
    for seg in replay.segments:
        for t, edit in enumerate(seg.edits):
            before, after = seg.values[t], seg.values[t + 1]
            if not (math.isnan(before) or math.isnan(after)):
                out.append((edit, seg.chains[t], after - before))
    return out


def commit_length(values: list[float], margin: float) -> int:
    """How many edits of an imagined sequence to verify at once, from the predicted value after each.

    ``values[t]`` is the model's value of the chain after ``t + 1`` edits. The plan grows past
    its current end only to a point predicted to beat that end by more than ``margin`` (the elite's
    noise margin): a longer plan costs no more real calls, but each imagined edit compounds the
    model's error, so it must promise a real gain. Returns a length in ``1 .. len(values)``.
    """
    length = 1
    for t in range(1, len(values)):
        if values[t] > values[length - 1] + margin:
            length = t + 1
    return length


def drop_cycles(root: Chain, plan: Plan, values: list[float]) -> tuple[Plan, list[float]]:
    """``plan`` without the runs of edits that come back to a chain met earlier on it (``root``
    included), e.g. an instruction added and then removed: they cost nothing to drop and verifying
    them would teach the model a transition that does not happen. ``values`` follow the edits."""
    seen = {root.key(): 0}  # chain -> length of the kept plan that reaches it
    kept, kept_values = [], []
    for (edit, chain), value in zip(plan, values):
        at = seen.get(chain.key())
        if at is not None:
            del kept[at:], kept_values[at:]
            seen = {k: n for k, n in seen.items() if n <= at}
            continue
        kept.append((edit, chain))
        kept_values.append(value)
        seen[chain.key()] = len(kept)
    return kept, kept_values


class MPPIPlanner(_Latent):
    @torch.no_grad()
    def _continue(self, z: torch.Tensor, texts: list[Chain]) -> tuple[list, torch.Tensor, torch.Tensor]:
        """One imagined edit of every sequence, drawn by ``softmax(predicted value / temperature)``
        over a few candidate edits of its text (a model-guided shooting distribution, so that a run of
        good edits, such as several deletions, is sampled as a whole). ``z [S, d]`` -> the picks
        (``(edit, chain)`` or None where no edit applies), the new latents ``[S, d]`` and their
        predicted values ``[S]`` (the old latent's value where nothing applied)."""
        m, cfg = self.model, self.cfg
        steps = [self.candidates(t, 8, imagined=True) for t in texts]
        rows = [k for k, s in enumerate(steps) for _ in s]
        new_z, values = z.clone(), m.reward(z)
        picks: list = [None] * len(texts)
        if not rows:
            return picks, new_z, values
        flat = [p for s in steps for p in s]
        zn = m.step(z[rows], self.e([e for e, _ in flat], [texts[k] for k in rows]))  # [sum_k |steps[k]|, d]
        rn = m.reward(zn)
        gen = torch.Generator().manual_seed(self.rng.randrange(1 << 30))
        at = 0
        for k, s in enumerate(steps):
            if s:
                w = torch.softmax(rn[at : at + len(s)] / cfg.temperature, 0)
                j = at + int(torch.multinomial(w, 1, generator=gen))
                picks[k], new_z[k], values[k] = flat[j], zn[j], rn[j]
            at += len(s)
        return picks, new_z, values

    @torch.no_grad()
    def choose(
        self, chain: Chain, cands: list[tuple[Edit, Chain]], bonus: torch.Tensor | None = None, max_edits: int = 1
    ) -> tuple[Plan, list[float]]:
        """MPPI over sequences of ``horizon`` edits whose first edit is one of ``cands``.

        Returns the plan to verify (the chosen first edit, extended by up to ``min(commit,
        max_edits) - 1`` imagined edits of its best sequence, see :func:`commit_length`, less any
        cycle, see :func:`drop_cycles`) and the model's value of the chain after each of its edits.
        """
        cfg, m = self.cfg, self.model
        z0 = self.z([chain])  # [1, d]
        z1 = m.step(z0.expand(len(cands), -1), self.e([e for e, _ in cands], [chain] * len(cands)))  # [K, d]
        r1, v1 = m.optimistic_reward(z1, cfg.kappa), m.reward(z1)  # [K]
        gain = self.predicted_gain(chain, [e for e, _ in cands])
        if gain is not None:  # the ridge head values the first edit; the ensemble's spread still adds optimism
            v1 = m.reward(z0)[0] + gain
            r1 = v1 + (r1 - m.reward(z1))
        logits = torch.zeros(len(cands))
        gen = torch.Generator().manual_seed(self.rng.randrange(1 << 30))
        total, count = torch.zeros(len(cands)), torch.zeros(len(cands))
        best_seq: dict[int, tuple[float, Plan, list[float]]] = {}  # first edit -> its best sampled sequence
        for _ in range(cfg.iterations):
            first = torch.multinomial(torch.softmax(logits, 0), cfg.samples, replacement=True, generator=gen)
            returns = r1[first].clone()
            z = z1[first]
            texts = [cands[int(i)][1] for i in first]
            tails: list[Plan] = [[] for _ in first]
            means = [[float(v1[int(i)])] for i in first]
            for _ in range(cfg.horizon - 1):
                picks, z, values = self._continue(z, texts)
                if all(p is None for p in picks):
                    break
                returns = torch.maximum(returns, values)
                for k, p in enumerate(picks):
                    if p is not None:
                        tails[k].append(p)
                        texts[k] = p[1]
                        means[k].append(float(values[k]))
            for k, i in enumerate(first.tolist()):
                if i not in best_seq or float(returns[k]) > best_seq[i][0]:
                    best_seq[i] = (float(returns[k]), tails[k], means[k])
            total.index_add_(0, first, returns)
            count.index_add_(0, first, torch.ones(len(first)))
            w = torch.softmax((returns - returns.max()) / cfg.temperature, 0)
            mass = torch.zeros(len(cands)).index_add_(0, first, w)
            logits = torch.log(mass + 1e-3)
        # Mean (not max) return per first edit: a max over samples favours the edits drawn most often.
        mean_return = torch.where(count > 0, total / count.clamp(min=1), r1)
        idx = pick(mean_return + 1e-3 * torch.softmax(logits, 0), bonus)
        reach = min(cfg.commit, max_edits)
        if idx not in best_seq or reach <= 1:
            return [cands[idx]], [float(v1[idx])]
        _, tail, means = best_seq[idx]
        n = commit_length(means[:reach], cfg.margin)
        plan, values = drop_cycles(chain, [cands[idx]] + tail[: n - 1], means[:n])
        return (plan, values) if plan else ([cands[idx]], [float(v1[idx])])  # it came back to the root


class GradientPlanner(_Latent):
    def choose(
        self, chain: Chain, cands: list[tuple[Edit, Chain]], bonus: torch.Tensor | None = None, max_edits: int = 1
    ) -> tuple[Plan, list[float]]:
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
            return [cands[idx]], [float(m.reward(z1[idx]))]


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

    def choose(
        self, chain: Chain, cands: list[tuple[Edit, Chain]], bonus: torch.Tensor | None = None, max_edits: int = 1
    ) -> tuple[Plan, list[float]]:
        with torch.no_grad():
            z = self.z([chain])[0]
            e = self.e([a for a, _ in cands], [chain] * len(cands))
            idx = pick(self.policy(z, e), bonus)
            return [cands[idx]], [float(self.model.reward(self.model.step(z, e[idx])))]


PLANNERS = {"mppi": MPPIPlanner, "gradient": GradientPlanner, "policy": PolicyPlanner}
WARMUPS = ("star", "walks")


def plan_with_world_model(
    search: Search,
    start: Chain,
    vocab: Vocabulary,
    features: LMFeatures,
    method: str = "mppi",
    cfg: PlannerConfig = PlannerConfig(),
    weights: LossWeights = LossWeights(),
    walks: list[list[Edit]] | None = None,
) -> dict:
    """Run a world-model planner within ``search``'s call budget; returns training diagnostics.

    ``walks``: explicit warm-up walks (edit sequences applied from ``start``) in place of the
    ``cfg.warmup_edits`` drawn ones.
    """
    if method not in PLANNERS:
        raise ValueError(f"unknown planner {method!r}; known: {sorted(PLANNERS)}")
    env = search.env
    torch.manual_seed(cfg.seed)
    model = WorldModel(features.chain_dim, features.edit_dim, latent=cfg.latent, n_ops=len(ALL_OPS))
    planner = PLANNERS[method](model, features, vocab, env.accept, cfg)
    rng, replay = planner.rng, Replay()
    elite = Elite(cfg.elite, cfg.patience, cfg.margin)
    counts = OpCounts(cfg.explore)
    start_value = search.evaluate(start).value
    elite.admit(start, start_value)
    if cfg.warmup not in WARMUPS:
        raise ValueError(f"unknown warm-up {cfg.warmup!r}; known: {WARMUPS}")
    # Warm-up (real, counted): `warmup_edits` edits, as single edits of the start chain ("star": what each
    # operation does from where planning begins, untangled from the others) or as walks of `horizon` edits.
    walk_len = 1 if cfg.warmup == "star" else cfg.horizon
    n_walks = -(-cfg.warmup_edits // walk_len)
    made = 0  # warm-up edits evaluated so far
    for w in range(len(walks) if walks is not None else n_walks):
        chains, edits, values = [start], [], [start_value]
        for t in range(len(walks[w]) if walks is not None else walk_len):
            if search.exhausted or (walks is None and made >= cfg.warmup_edits):
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
            made += 1
            counts.record(edit)
            elite.admit(chain, values[-1], values[-2])
            chains.append(chain)
            edits.append(edit)
        if edits:
            replay.add(chains, edits, values)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    warm_up = {
        "kind": "given" if walks is not None else cfg.warmup,
        "walks": [len(seg.edits) for seg in replay.segments],
    }
    diag = {
        "warmup": warm_up,
        "fit": fit_world_model(model, replay, features, cfg.horizon, cfg.fit_steps, optimizer=opt, seed=cfg.seed),
        "gain_head_pairs": planner.fit_gain_head(replay) if method == "mppi" else 0,
    }
    stale = 0
    failed_in_a_row = 0  # planned edits since the last one that entered the elite
    reach = 1  # edits the next plan may verify at once: grows by one after each success, back to 1 after a failure
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
        plan, predicted = planner.choose(here, cands, bonus, max_edits=reach)
        while len(plan) > 1 and (env.seen(plan[-1][1]) or not env.accept(plan[-1][1])):
            plan = plan[:-1]  # imagined edits skip the prompt-length check; a known end teaches nothing
        edits, chain = [e for e, _ in plan], plan[-1][1]
        label = edits[0] if len(edits) == 1 else " ; ".join(e.describe() for e in edits)
        value = search.evaluate(chain, label, predicted[len(plan) - 1]).value
        for edit in edits:
            counts.record(edit)
        improved = elite.report(here, here_value, chain, value)
        failed_in_a_row = 0 if improved else failed_in_a_row + 1
        reach = min(reach + 1, cfg.commit) if improved else 1
        # The chains passed on the way were not evaluated: their values are unknown (NaN, not trained on).
        replay.add([here] + [c for _, c in plan], edits, [here_value] + [math.nan] * (len(plan) - 1) + [value])
        diag["fit"] = fit_world_model(
            model, replay, features, cfg.horizon, cfg.refit_steps, optimizer=opt, seed=cfg.seed + len(replay)
        )
        if method == "mppi":
            diag["gain_head_pairs"] = planner.fit_gain_head(replay)
    diag["replay_transitions"] = len(replay)
    diag["encoder_forwards"] = features.forwards
    diag["elite"] = elite.to_json()
    diag["ops"] = counts.to_json()
    return diag
