"""Planted environments where the best edit is known: the planners must find it."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from plan_fakes import TRAP_START_STEPS, FakeFeatures, planted_delete_value, planted_trap_value, planted_value
from ponder.data import get_task
from ponder.plan.edits import ALL_OPS, Edit, Vocabulary, apply_edit, candidate_edits
from ponder.plan.elite import Elite
from ponder.plan.env import Outcome, PlanEnv
from ponder.plan.planners import (
    GradientPlanner,
    MPPIPlanner,
    PlannerConfig,
    PolicyPlanner,
    commit_length,
    drop_cycles,
    plan_with_world_model,
    single_edit_gains,
)
from ponder.plan.search import Search, call_savings, calls_to_reach
from ponder.plan.state import Chain
from ponder.plan.world_model import Replay, WorldModel, fit_world_model

VOCAB = Vocabulary(words=["w"], instructions=["i1", "i2"], exemplars=["1+1=2"], steps=["s"])
START = Chain(instructions=("x",), answer_format="think")


class PlantedEnv(PlanEnv):
    """A PlanEnv whose outcome is :func:`planted_value` instead of an LM's answers (one call per input)."""

    def _run(self, chain, problems):
        v = planted_value(chain)
        return Outcome(v, None, None, len(problems)), len(problems), 0, 0  # calls, tokens, generated tokens


class TrapEnv(PlanEnv):
    """A PlanEnv whose outcome is :func:`planted_trap_value` (one call per input)."""

    def _run(self, chain, problems):
        return (
            Outcome(planted_trap_value(chain), None, None, len(problems)),
            len(problems),
            0,
            0,
        )  # calls, tokens, generated tokens


class DeleteEnv(PlanEnv):
    """A PlanEnv whose outcome is :func:`planted_delete_value` (one call per input)."""

    def _run(self, chain, problems):
        return (
            Outcome(planted_delete_value(chain), None, None, len(problems)),
            len(problems),
            0,
            0,
        )  # calls, tokens, generated tokens


def planted_env(char_tokenizer, n_train=4, cls=PlantedEnv):
    lm = SimpleNamespace(tokenizer=char_tokenizer)
    return cls(lm, get_task("add3"), n_train=n_train, n_heldout=2)


def trained_model(seed=0):
    """A world model fit on every 2-edit path from three chains (planted values)."""
    torch.manual_seed(seed)
    feats, rng, replay = FakeFeatures(), random.Random(seed), Replay()
    for root in (START, Chain(instructions=("x", "y"), answer_format="direct"), Chain(exemplars=("1+1=2",))):
        for e1, c1 in candidate_edits(root, VOCAB, rng, 40):
            for e2, c2 in candidate_edits(c1, VOCAB, rng, 6):
                replay.add([root, c1, c2], [e1, e2], [planted_value(root), planted_value(c1), planted_value(c2)])
    model = WorldModel(feats.chain_dim, feats.edit_dim, latent=16, hidden=64)
    fit_world_model(model, replay, feats, horizon=2, steps=400, lr=1e-2, seed=seed)
    return model, feats


@pytest.fixture(scope="module")
def model_and_features(one_thread):
    return trained_model()


def best_edit(cands):
    return max(range(len(cands)), key=lambda k: planted_value(cands[k][1]))


@pytest.mark.parametrize("planner_cls", [MPPIPlanner, GradientPlanner])
def test_planner_picks_the_planted_best_edit(planner_cls, model_and_features):
    model, feats = model_and_features
    chain = Chain(instructions=("x", "z"), answer_format="direct")  # not a training root: generalisation
    planner = planner_cls(model, feats, VOCAB, None, PlannerConfig(horizon=1, samples=32, kappa=0.0, seed=1))
    cands = planner.candidates(chain, 40)
    plan, predicted = planner.choose(chain, cands)
    assert len(plan) == len(predicted) == 1  # horizon 1: nothing to commit beyond the first edit
    assert plan[0][0] == Edit("set_format", payload="qa")
    assert plan[0] == cands[best_edit(cands)]
    assert predicted[0] == pytest.approx(planted_value(plan[0][1]), abs=0.15)


def test_imagination_policy_learns_the_planted_best_edit(model_and_features):
    model, feats = model_and_features
    planner = PolicyPlanner(model, feats, VOCAB, None, PlannerConfig(horizon=1, kappa=0.0, policy_episodes=16, seed=0))
    for _ in range(40):
        planner.train_in_imagination([START])
    cands = planner.candidates(START, 40)
    plan, _ = planner.choose(START, cands)
    assert plan[0][1].answer_format == "qa"


@pytest.mark.parametrize("method", ["mppi", "gradient"])
def test_world_model_planner_finds_the_optimum_in_a_planted_environment(method, char_tokenizer, one_thread):
    env = planted_env(char_tokenizer)
    search = Search(env, budget=4 * 30, measure_heldout=False)
    cfg = PlannerConfig(horizon=2, candidates=24, warmup_edits=6, fit_steps=200, refit_steps=20, seed=0)
    diag = plan_with_world_model(search, START, VOCAB, FakeFeatures(), method, cfg)
    optimum = planted_value(Chain(answer_format="qa"))
    assert search.best_outcome.value == pytest.approx(optimum)
    assert search.best.answer_format == "qa" and not search.best.instructions
    assert env.counters.calls <= 120 and env.counters.calls == 4 * env.counters.evaluations
    assert diag["replay_transitions"] >= 6
    planned = [s for s in search.steps if s.predicted is not None]
    assert planned, "after the warm-up every step carries the model's prediction"


def _run_trap(method, char_tokenizer, **cfg_kwargs):
    """Warm-up walks that strand the incumbent on the plateau (0.3) and also take one step down the
    real path (one step deleted: 0.26); then plan for 30 evaluations. The exploration bonus is off
    (``explore=0``) and MPPI verifies one edit at a time (``commit=1``) to test the elite alone: with the
    bonus the gradient planner spends part of the 30 evaluations on other operations, and with longer
    plans a failed two-edit plan from the plateau root changes MPPI's course; neither reaches the empty
    thought in time."""
    torch.manual_seed(cfg_kwargs.get("seed", 0))  # a run's draws depend on its seed, not on the runs before it
    env = planted_env(char_tokenizer, cls=TrapEnv)
    search = Search(env, budget=4 * 30, measure_heldout=False)
    cfg_kwargs.setdefault("explore", 0.0)
    cfg_kwargs.setdefault("commit", 1)  # one edit per evaluation: the elite's restarts alone
    cfg_kwargs = {"seed": 0, "policy_episodes": 16, **cfg_kwargs}
    cfg = PlannerConfig(horizon=2, candidates=16, fit_steps=150, refit_steps=20, **cfg_kwargs)
    walks = [[Edit("set_format", payload="direct")], [Edit("delete_step", index=0)]]
    diag = plan_with_world_model(search, Chain(steps=TRAP_START_STEPS), VOCAB, FakeFeatures(), method, cfg, walks=walks)
    return search, diag


def _record_roots(monkeypatch) -> list:
    """The chain each planning round edits (:meth:`Elite.root`, called once a round), in order."""
    roots, original = [], Elite.root

    def root(self):
        roots.append(original(self))
        return roots[-1]

    monkeypatch.setattr(Elite, "root", root)
    return roots


@pytest.mark.numerics
@pytest.mark.parametrize("method", ["mppi", "gradient", "policy"])
def test_planner_escapes_a_plateau_trap(method, char_tokenizer, one_thread, monkeypatch):
    plateau = Chain(steps=TRAP_START_STEPS, answer_format="direct")
    real_path = Chain(steps=TRAP_START_STEPS[1:], answer_format="think")  # the warm-up's deletion (0.26)
    # Without restarts (a root is never retired, any gain admits) the planner only edits the
    # plateau incumbent, where no edit is ever an improvement: it stays at 0.3.
    roots = _record_roots(monkeypatch)
    stuck, _ = _run_trap(method, char_tokenizer, patience=10**9, margin=0.0)
    assert stuck.best_outcome.value == pytest.approx(0.3)
    assert stuck.best.answer_format == "direct"
    assert roots[:20] == [plateau] * 20  # until it runs out of the plateau's untried edits, if ever
    # With the elite and patience it retires the plateau root after `patience` (3) failed children, whichever they
    # are (no child of the plateau beats it by the margin), and plans from the real path's root next. Rounding
    # cannot change this branch: every child of the plateau is worth at most 0.3.
    roots.clear()
    search, diag = _run_trap(method, char_tokenizer)
    assert roots[:4] == [plateau] * 3 + [real_path]
    assert diag["elite"]["restarts"] >= 1
    if method != "policy":
        # MPPI and the gradient planner follow it down to the empty thought within the 30 evaluations on most
        # seeds. Whether one seed's run gets there in time follows its trajectory, which the kernels' rounding can
        # change (MPPI, seeds 0-4: 5 of 5 under ATEN_CPU_CAPABILITY=default, 4 of 5 under avx2 and native
        # avx512; the gradient planner 5 of 5 under each), so the property is asserted over seeds, with a margin.
        def reached(run) -> bool:
            return run.best_outcome.value == pytest.approx(1.0) and run.best == Chain(answer_format="think")

        runs = [search] + [_run_trap(method, char_tokenizer, seed=seed)[0] for seed in range(1, 5)]
        assert sum(reached(run) for run in runs) >= 3, [run.best_outcome.value for run in runs]
    # The policy (REINFORCE in imagination, the weakest of the three here) is not asserted to climb from there: it
    # found a deletion on 2 of seeds 0-5 under each of ATEN_CPU_CAPABILITY default, avx2 and native avx512 (which 2
    # depends on the kernels' rounding), a property of neither the seed nor the planner.


def _run_unseen_op(method, char_tokenizer, explore, **cfg_kwargs):
    """Warm-up walks of one edit of every operation that applies but ``delete_step`` (all of them hurt:
    0.1), then plan for 12 evaluations; deleting steps (0.2 -> 0.4 -> ... -> 1.0) is the only way up."""
    env = planted_env(char_tokenizer, cls=DeleteEnv)
    search = Search(env, budget=4 * 22, measure_heldout=False)
    cfg = PlannerConfig(
        horizon=2,
        candidates=16,
        fit_steps=150,
        refit_steps=20,
        policy_episodes=16,
        seed=0,
        explore=explore,
        **cfg_kwargs,
    )
    walks = [
        [Edit("set_format", payload="direct")],
        [Edit("rewrite_step", index=0, payload="s")],
        [Edit("add_instruction", payload="i1")],
        [Edit("merge", index=0)],
        [Edit("reorder", index=0, pos=1)],
        [Edit("insert_word", field="steps", index=1, pos=0, payload="w")],
        [Edit("replace_word", field="steps", index=2, pos=0, payload="w")],
        [Edit("insert_step", index=1, payload="s")],
        [Edit("add_exemplar", payload="1+1=2")],
    ]
    diag = plan_with_world_model(search, Chain(steps=TRAP_START_STEPS), VOCAB, FakeFeatures(), method, cfg, walks=walks)
    return search, diag


def _first_delete(search):
    """Index of the first real evaluation of a deletion (None if never)."""
    return next((k for k, s in enumerate(search.steps) if "delete_step" in s.edit), None)


@pytest.mark.parametrize("method", ["mppi", "gradient", "policy"])
def test_exploration_bonus_finds_an_operation_the_warm_up_never_tried(method, char_tokenizer, one_thread):
    greedy, _ = _run_unseen_op(method, char_tokenizer, explore=0.0)
    search, diag = _run_unseen_op(method, char_tokenizer, explore=1.0)
    # With the bonus every planner tries the operation the warm-up never did, and climbs with it.
    first = _first_delete(search)
    assert first is not None and search.best_outcome.value >= 0.4
    assert search.best.answer_format == "think" and len(search.best.steps) < len(TRAP_START_STEPS)
    # Without it the gradient planner never deletes (the model extrapolates "every edit hurts");
    # MPPI and the policy get there by chance, but no sooner than with the bonus.
    if method == "gradient":
        assert _first_delete(greedy) is None and greedy.best_outcome.value == pytest.approx(0.2)
    else:
        assert _first_delete(greedy) is not None and first <= _first_delete(greedy)
    # every evaluated edit is counted as evidence (a cache hit too; each edit of a multi-edit plan);
    # calls are only the real evaluations
    c = search.env.counters
    edits = sum(len(st.edit.split(" ; ")) for st in search.steps[1:])
    assert sum(diag["ops"]["counts"].values()) == edits and c.calls == 4 * c.evaluations <= 88


@pytest.mark.parametrize("method", ["mppi", "gradient", "policy"])
def test_stalled_only_exploration_plans_greedily_until_patience_edits_fail(method, char_tokenizer, one_thread):
    greedy, _ = _run_unseen_op(method, char_tokenizer, explore=0.0)
    stalled, _ = _run_unseen_op(method, char_tokenizer, explore=1.0, explore_stalled_only=True)
    warm = 9  # the start and the nine warm-up edits
    patience = PlannerConfig().patience
    # every planned edit hurts here, so the first `patience` planned edits carry no bonus: the same as greedy
    assert [s.edit for s in stalled.steps[: warm + 1 + patience]] == [
        s.edit for s in greedy.steps[: warm + 1 + patience]
    ]
    # then the bonus applies and the operation the warm-up never tried is found and climbed with
    assert _first_delete(stalled) is not None and stalled.best_outcome.value >= 0.4


def test_pick_puts_the_bonus_on_a_rank_scale():
    from ponder.plan.planners import pick

    scores = torch.tensor([5.0, 4.0, -100.0, 3.0])  # an unseen edit's outlier score (index 2) is only last in rank
    assert pick(scores) == 0 and pick(scores, torch.zeros(4)) == 0
    assert pick(scores, torch.tensor([0.5, 0.5, 1.0, 0.5])) == 0  # bonus 1 vs 0.5: ranked last loses to the first
    assert (
        pick(scores, torch.tensor([0.1, 0.5, 1.0, 1.0])) == 3
    )  # between equal bonuses the planner's rank decides (3 over 2)
    assert pick(scores, torch.tensor([0.1, 0.1, 1.5, 0.1])) == 2  # a large enough bonus wins from the bottom


def test_op_counts_cover_and_bonus():
    from ponder.plan.explore import OpCounts

    counts = OpCounts(beta=0.2)
    a, b = Edit("delete_step"), Edit("merge")
    counts.record(a)
    counts.record(a)
    counts.record(a)
    assert counts.least_tried([(a, 1), (b, 2)]) == [(b, 2)]
    assert counts.bonus([a, b]).tolist() == pytest.approx([0.05, 0.2])
    assert counts.to_json() == {"beta": 0.2, "counts": {"delete_step": 3}}
    assert OpCounts().bonus([a]).tolist() == [0.0]


def test_calls_to_reach_and_savings():
    curve = [
        {"calls": 10, "heldout_accuracy": None},
        {"calls": 20, "heldout_accuracy": 0.5},
        {"calls": 40, "heldout_accuracy": 0.9},
    ]
    assert calls_to_reach(curve, 0.5) == 20 and calls_to_reach(curve, 0.9) == 40 and calls_to_reach(curve, 0.95) is None
    assert call_savings(20, 80) == pytest.approx(0.75)
    assert call_savings(None, 80) is None and call_savings(10, None) is None


@pytest.mark.parametrize("warmup", ["star", "walks"])
@pytest.mark.parametrize("cover", [True, False])
def test_warm_up_covers_distinct_operations(cover, warmup, char_tokenizer, one_thread):
    env = planted_env(char_tokenizer, cls=DeleteEnv)
    search = Search(env, budget=4 * 7, measure_heldout=False)  # the start and six warm-up edits, no planning
    cfg = PlannerConfig(horizon=3, warmup=warmup, candidates=48, fit_steps=5, cover_ops=cover, seed=1)
    diag = plan_with_world_model(search, Chain(steps=TRAP_START_STEPS), VOCAB, FakeFeatures(), "mppi", cfg)
    ops = [s.edit.split()[0] for s in search.steps[1:]]
    assert len(ops) == 6 and sum(diag["ops"]["counts"].values()) == 6
    # star: six single edits of the start chain; walks: two walks of `horizon` edits
    assert diag["warmup"] == {"kind": warmup, "walks": [1] * 6 if warmup == "star" else [3, 3]}
    if cover:
        assert len(set(ops)) == 6  # six evaluations, six operations


def _evaluations_to_optimum(char_tokenizer, commit: int, seed: int) -> tuple[int | None, Search]:
    """DeleteEnv after a warm-up that shows one deletion helping (0.2 -> 0.4) and three other
    operations hurting; MPPI plans from there until the empty thought (1.0) or 16 evaluations."""
    env = planted_env(char_tokenizer, cls=DeleteEnv)
    search = Search(env, budget=4 * 16, measure_heldout=False)
    walks = [
        [Edit("delete_step", index=0)],
        [Edit("set_format", payload="direct")],
        [Edit("add_instruction", payload="i1")],
        [Edit("rewrite_step", index=1, payload="s")],
    ]
    cfg = PlannerConfig(horizon=3, candidates=24, fit_steps=150, refit_steps=20, seed=seed, commit=commit)
    plan_with_world_model(search, Chain(steps=TRAP_START_STEPS), VOCAB, FakeFeatures(), "mppi", cfg, walks=walks)
    reached = next((k for k, st in enumerate(search.steps) if st.outcome.value >= 1.0), None)
    return reached, search


@pytest.mark.parametrize("seed", [2, 3])
def test_mppi_verifies_a_run_of_good_edits_in_one_evaluation(seed, char_tokenizer, one_thread):
    # Seeds where the model, after one more real deletion, predicts that two deletions in a row pay.
    # Not every seed shows it: in seed 1 a two-edit plan that adds an operation never evaluated (an
    # insertion) fails and plans take 9 evaluations against 8; in seed 0 one edit at a time never
    # reaches the empty thought within the 16 evaluations, while plans do in 10.
    one_at_a_time, _ = _evaluations_to_optimum(char_tokenizer, commit=1, seed=seed)
    planned, search = _evaluations_to_optimum(char_tokenizer, commit=3, seed=seed)
    assert one_at_a_time is not None and planned is not None
    # Three deletions were left after the warm-up; with plans, two of them cost one evaluation.
    assert planned < one_at_a_time
    multi = [st.edit for st in search.steps[: planned + 1] if " ; " in st.edit]
    assert multi and all(part.startswith("step:delete_step") for part in multi[0].split(" ; "))
    assert search.best == Chain(answer_format="think")


def test_commit_length_and_drop_cycles():
    assert commit_length([0.30], 0.02) == 1
    assert commit_length([0.30, 0.31, 0.36], 0.02) == 3  # 0.36 beats 0.30 by more than the margin
    assert commit_length([0.30, 0.35, 0.36], 0.02) == 2  # 0.36 does not beat 0.35 by more than 0.02
    assert commit_length([0.30, 0.29, 0.31], 0.02) == 1
    root = Chain(steps=("a", "b"))
    add = Edit("add_instruction", payload="i1")
    with_i = apply_edit(root, add)
    back = apply_edit(with_i, Edit("remove_instruction", index=0))
    deleted = apply_edit(back, Edit("delete_step", index=0))
    plan = [
        (Edit("delete_step", index=0), deleted),
        (add, apply_edit(deleted, add)),
        (Edit("remove_instruction", index=0), deleted),
    ]
    kept, values = drop_cycles(root, plan, [0.1, 0.2, 0.3])
    assert kept == plan[:1] and values == [0.1]  # the add-then-remove cycle is gone
    assert drop_cycles(root, [(add, with_i), (Edit("remove_instruction", index=0), back)], [0.1, 0.2]) == ([], [])


def test_single_edit_gains_read_verified_pairs_only():
    a, b, c, d = (Chain(instructions=(x,)) for x in "abcd")
    e1, e2, e3 = (Edit("set_format", payload=f) for f in ("qa", "think", "direct"))
    replay = Replay()
    replay.add([a, b], [e1], [0.2, 0.5])
    replay.add([b, c, d], [e2, e3], [0.5, math.nan, 0.1])  # a two-edit plan: its end has a value, its middle none
    assert single_edit_gains(replay) == [(e1, a, pytest.approx(0.3))]


class _LinearGainFeatures(FakeFeatures):
    """Edit features ``[v(payload), op one-hot]`` with ``v`` a fixed random vector per word."""

    words = [f"w{i}" for i in range(24)]
    edit_dim = 6 + len(ALL_OPS)

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.vec = {w: torch.randn(6, generator=g) for w in self.words}
        self.beta = torch.randn(6, generator=g)

    def gain(self, word: str) -> float:
        return 0.05 * float(self.vec[word] @ self.beta)

    def edits(self, edits, chains):
        onehot = torch.eye(len(ALL_OPS))
        return torch.stack([torch.cat([self.vec[e.payload], onehot[ALL_OPS.index(e.op)]]) for e in edits])


@pytest.mark.parametrize("value_head", ["ridge", "world_model"])
def test_mppi_values_first_edits_with_the_ridge_gain_head(value_head, one_thread):
    """Twelve verified edits whose gain is linear in six edit features: the ridge head finds the best
    of the twelve unseen ones and MPPI values it as the root's value plus the predicted gain; the world model, left
    untrained here, does not (the default scoring)."""
    feats, start = _LinearGainFeatures(), Chain(instructions=("think w0",))
    edits = [Edit("replace_word", field="instructions", index=0, pos=1, payload=w) for w in feats.words[1:]]
    cands = [(e, apply_edit(start, e)) for e in edits]
    seen, unseen = cands[:12], cands[12:]
    replay = Replay()
    for e, c in seen:
        replay.add([start, c], [e], [0.5, 0.5 + feats.gain(e.payload)])
    torch.manual_seed(0)
    model = WorldModel(feats.chain_dim, feats.edit_dim, latent=16, hidden=32, n_ops=len(ALL_OPS))
    cfg = PlannerConfig(horizon=1, samples=32, kappa=0.0, seed=0, value_head=value_head, ridge_lam=1e-3)
    planner = MPPIPlanner(model, feats, VOCAB, None, cfg)
    assert planner.fit_gain_head(replay) == 12
    plan, predicted = planner.choose(start, unseen)
    best = max(unseen, key=lambda ec: feats.gain(ec[0].payload))
    if value_head == "world_model":
        assert planner.gain_head is None and plan[0] != best
        return
    assert plan[0] == best
    with torch.no_grad():
        root = float(model.reward(model.encode(feats.chains([start])))[0])
    assert predicted[0] == pytest.approx(root + feats.gain(best[0].payload), abs=0.01)
