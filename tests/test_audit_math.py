"""Planted-signal tests of the audit diagnostics' pure math (ponder.audit)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from ponder.audit.budget import peak
from ponder.audit.dtr import deep_from, dtr, settling_depth, think_at_n, think_at_n_keep, think_at_n_tokens
from ponder.audit.planning import (
    checkpoint_planning,
    entropy_bits,
    format_class,
    lexicon_clusters,
    mine_strategic_ngrams,
    planning_spans,
)
from ponder.audit.policy_entropy import perturb
from ponder.audit.reflection import analyse_trace, candidate_in_line, reflection_result
from ponder.audit.sparsity import ArchitectureMismatch, random_jaccard, update_sparsity
from ponder.audit.step_gain import group_steps, prefix_contexts, split_steps, step_gains, summarize_gains
from ponder.audit.validity import exemplar_prefix, invalidate_thought
from ponder.lm.delimiters import think_token_ids
from ponder.lm.tiny import build_char_tokenizer

# ---------------------------------------------------------------- DTR


def planted_divergence(settle: list[int], num_layers: int) -> torch.Tensor:
    """[L, T]: token t's JSD is 0.9 before layer settle[t] and 0.1 from it on (0 at the last layer)."""
    d = torch.full((num_layers, len(settle)), 0.9)
    for t, s in enumerate(settle):
        d[s - 1 :, t] = 0.1
    d[-1] = 0.0
    return d


def test_settling_depth_recovers_planted_layers():
    settle = [1, 3, 5, 7, 8, 8, 2, 6]
    d = planted_divergence(settle, 8)
    assert settling_depth(d, g=0.5).tolist() == settle


def test_settling_uses_running_minimum():
    # dips below g at layer 2, rises again: settled at 2 (min over j <= l).
    d = torch.tensor([[0.9], [0.3], [0.8], [0.7], [0.0]])
    assert settling_depth(d, 0.5).item() == 2
    assert settling_depth(d, 0.2).item() == 5  # never below 0.2 until the final layer


def test_dtr_with_both_depth_rules():
    settle = [1, 3, 5, 7, 8, 8, 2, 6]
    d = planted_divergence(settle, 8)
    assert deep_from(8, 0.85, "paper") == 7  # ceil(6.8)
    assert deep_from(8, 0.85, "research") == 2  # ceil(1.2)
    assert dtr(d, 0.5, 0.85, "paper") == pytest.approx(3 / 8)  # layers 7, 8, 8
    assert dtr(d, 0.5, 0.85, "research") == pytest.approx(7 / 8)  # all but layer 1
    assert math.isnan(dtr(torch.zeros(8, 0)))


def test_think_at_n_beats_a_wrong_majority_at_lower_cost():
    # 6 samples: four wrong ("5", low DTR), two right ("7", high DTR).
    group = {
        "answers": ["5", "5", "7", "5", "7", "5"],
        "prefix_dtr": [0.1, 0.2, 0.9, 0.15, 0.8, 0.05],
        "lengths": [100] * 6,
        "score": lambda a: float(a == "7"),
    }
    assert think_at_n_keep(group["prefix_dtr"]) == [2, 4, 1]
    r = think_at_n([group], prefix=50)
    assert r.think_at_n_accuracy == 1.0 and r.self_consistency_accuracy == 0.0
    assert r.half_vote_accuracy == 0.0  # samples 0-2 vote "5": the ranking, not the halving, finds "7"
    assert r.think_at_n_tokens == 3 * 100 + 3 * 50 and r.self_consistency_tokens == 600
    assert r.mean_sample_accuracy == pytest.approx(2 / 6)
    assert think_at_n_tokens([30, 80, 10], kept=[1], prefix=50) == 30 + 80 + 10


# ---------------------------------------------------------------- step information gain


def test_split_steps_and_prefix_contexts():
    assert split_steps("4+8+0=12 3+7+1=11") == ["4+8+0=12", "3+7+1=11"]
    assert split_steps("first line\nsecond line\n") == ["first line", "second line"]
    tok = build_char_tokenizer()
    open_id, close_id = think_token_ids(tok)
    prompt, thought = tok("12+34=")["input_ids"], tok("2+4+0=06 1+3+0=04", add_special_tokens=False)["input_ids"]
    ctx = prefix_contexts(tok, prompt, thought, open_id, close_id)
    # Each context is a prefix of the sampled thought ids, cut where a step's text ends.
    assert [c[: len(prompt) + 1] == prompt + [open_id] and c[-1] == close_id for c in ctx] == [True] * 3
    assert [tok.decode(c[len(prompt) + 1 : -1]) for c in ctx] == ["", "2+4+0=06", "2+4+0=06 1+3+0=04"]


def test_long_thoughts_are_grouped_into_max_steps():
    steps = [f"s{i}" for i in range(10)]
    groups = group_steps(steps, 4, multiline=False)
    assert len(groups) == 4 and " ".join(groups).split() == steps
    assert group_steps(steps, 16, multiline=False) == steps
    tok = build_char_tokenizer()
    ids = tok(" ".join(steps), add_special_tokens=False)["input_ids"]
    ctx = prefix_contexts(tok, tok("p")["input_ids"], ids, *think_token_ids(tok), max_steps=4)
    assert len(ctx) == 5 and ctx[-1][3:-1] == ids  # <bos> p <think> ... </think>


def test_step_gains_recover_planted_increments():
    lls = [-9.0, -7.5, -7.5, -2.0]
    assert step_gains(lls) == [1.5, 0.0, 5.5]
    s = summarize_gains([lls, [-4.0, -1.0]], [True, False])
    assert s["mean_total_gain"] == pytest.approx((7.0 + 3.0) / 2)
    assert s["gain_by_step"] == {"1": pytest.approx((1.5 + 3.0) / 2), "2": 0.0, "3": 5.5}
    assert s["accuracy"] == 0.5


# ---------------------------------------------------------------- policy entropy


def test_perturb_changes_exactly_the_requested_share():
    rng = random.Random(0)
    tokens = list(range(20))
    out, pos = perturb(tokens, 0.25, pool=[100, 101], rng=rng)
    assert len(pos) == 5
    assert [i for i in range(20) if out[i] != tokens[i]] == pos


# ---------------------------------------------------------------- reflection


def test_reflection_first_answer_and_classes():
    right = lambda a: a == "42"  # noqa: E731
    thought = "let me add\nso the answer is 41\nwait, recheck\nthe answer: 42\n"
    a = analyse_trace(thought, "42", "42", right)
    assert a.first_answer == "41" and a.first_line == 1 and a.kind == "corrective"
    assert a.chars_before == len("let me add\nso the answer is 41\n")
    b = analyse_trace("answer is 42\nyes, 42\n", "42", "42", right)
    assert b.kind == "confirmatory" and b.first_line == 0
    c = analyse_trace("\\boxed{42}\nhmm\n", "40", "40", right)
    assert c.first_answer == "42" and c.kind == "harmful"
    d = analyse_trace("4+8+0=12 3+7+1=11", "112", "112", lambda x: x == "112")
    assert d.kind == "none" and d.first_line == 1  # no candidate in the thought: first answer is the answer line
    e = analyse_trace("no idea", "", None, right)
    assert e.first_answer is None and e.kind is None
    traces = [thought + "42", "answer is 42\nyes, 42\n42", "\\boxed{42}\nhmm\n40", "no idea"]
    r = reflection_result([a, b, c, e], traces, [right] * 4)
    assert r.no_answer == 1 and r.kinds["corrective"] == 1 and r.kinds["confirmatory"] == 1 and r.kinds["harmful"] == 1
    assert r.accuracy_at_first == pytest.approx(2 / 4) and r.accuracy_final == pytest.approx(2 / 4)
    after = (len(traces[0]) - a.chars_before) + (len(traces[1]) - b.chars_before) + (len(traces[2]) - c.chars_before)
    assert r.token_share_after_first == pytest.approx(after / sum(map(len, traces[:3])))
    assert candidate_in_line("nothing here") is None


# ---------------------------------------------------------------- budget, validity


def test_peak_is_first_maximum():
    assert peak([8, 16, 32, 64], [0.2, 0.6, 0.6, 0.4]) == (16, 0.6)


def test_invalid_thought_breaks_every_step_but_keeps_format():
    rng = random.Random(0)
    thought = "4+8+0=12 3+7+1=11 2+6+1=09"
    bad = invalidate_thought(thought, rng)
    old, new = thought.split(), bad.split()
    assert len(old) == len(new)
    for o, n in zip(old, new):
        assert o != n and o.split("=")[0] == n.split("=")[0] and len(o) == len(n)


def test_exemplar_prefixes():
    from ponder.data.task import Problem

    ps = [Problem("1+2=", "3", thought="1+2+0=03"), Problem("5+5=", "10", thought="5+5+0=10")]
    assert exemplar_prefix(ps, "valid") == "1+2=<think>1+2+0=03</think>3\n5+5=<think>5+5+0=10</think>10\n"
    assert exemplar_prefix(ps, "answer_only") == "1+2=3\n5+5=10\n"
    inv = exemplar_prefix(ps, "invalid")
    assert inv.count("<think>") == 2 and "1+2+0=03" not in inv and "</think>3\n" in inv


# ---------------------------------------------------------------- sparsity


def test_sparsity_bf16_vs_fp32_and_rank_planted():
    torch.manual_seed(0)
    base = {"model.layers.0.w": torch.ones(8, 8), "model.layers.1.w": torch.randn(8, 8), "lm_head.bias": torch.zeros(8)}
    after = {k: v.clone() for k, v in base.items()}
    after["model.layers.0.w"][0, :3] += 0.5  # 3 big updates: survive bf16
    after["model.layers.0.w"][1, :4] += 2e-5  # 4 tiny updates: > tol in fp32, vanish in bf16 (|w| = 1)
    after["model.layers.0.w"][2, :2] += 2e-6  # 2 below tol: seen only by the exact (no tolerance) count
    u, v = torch.randn(8, 1), torch.randn(1, 8)
    after["model.layers.1.w"] += u @ v  # dense rank-1 update: 64 entries
    r = update_sparsity(base, after, tol=1e-5)
    total = 64 + 64 + 8
    assert r.total == total
    assert r.updated["fp32"] == 3 + 4 + 64
    assert r.updated["exact"] == 3 + 4 + 2 + 64
    assert r.sparsity("bf16") == pytest.approx(
        1 - (3 + 64) / total, abs=1 / total
    )  # bf16 may round a rank-1 entry to 0
    assert r.per_layer["layer 0"]["updated_bf16"] == 3 and r.per_layer["layer 0"]["updated_fp32"] == 7
    assert r.ranks["model.layers.1.w"] == pytest.approx(1 / 8)
    assert r.ranks["model.layers.0.w"] == pytest.approx(3 / 8)  # three changed rows


def test_overlap_of_two_runs_is_jaccard():
    base = {"w": torch.zeros(10, 10)}
    a, b = {"w": torch.zeros(10, 10)}, {"w": torch.zeros(10, 10)}
    a["w"].view(-1)[:30] = 1.0
    b["w"].view(-1)[20:50] = 1.0
    r = update_sparsity(base, a, other=b, ranks=False)
    assert r.overlap["jaccard_bf16"] == pytest.approx(10 / 50)
    assert r.overlap["random_baseline"] == pytest.approx(random_jaccard(0.3, 0.3))


def test_architecture_mismatch_names_the_tensors():
    with pytest.raises(ArchitectureMismatch, match=r"layers\.0\.w.*\(4, 4\) vs \(4, 5\)"):
        update_sparsity({"layers.0.w": torch.zeros(4, 4)}, {"layers.0.w": torch.zeros(4, 5)})
    with pytest.raises(ArchitectureMismatch, match="only in base: extra"):
        update_sparsity({"w": torch.zeros(2), "extra": torch.zeros(2)}, {"w": torch.zeros(2)})


# ---------------------------------------------------------------- planning tokens


def test_planning_spans_semantic_entropy_and_formats():
    strategic = lexicon_clusters(["let me", "wait=check", "double check=check"])
    thoughts = ["let me add 2 and 3 . wait , 5", "let me see . double check : 5"]
    planning, clusters, _ = planning_spans(thoughts[0], strategic)
    assert sorted(clusters) == ["check", "let me"]
    assert sum(planning) == 3  # let, me, wait
    cp = checkpoint_planning("m", thoughts, ["5", "five"], strategic, word_entropies=[[1.0] * 10, [3.0] * 8])
    assert cp.clusters == {"let me": 2, "check": 2}
    assert cp.planning_semantic_entropy_bits == pytest.approx(1.0)
    assert cp.planning_token_share == pytest.approx((3 + 4) / (10 + 8))
    # execution words: 7 of thought 0 (entropy 1), 4 of thought 1 (entropy 3)
    assert cp.execution_entropy_nats == pytest.approx((7 * 1.0 + 4 * 3.0) / 11)
    assert cp.format_diversity_bits == pytest.approx(1.0)  # number vs text answer
    assert format_class(None, "5") == "no-thought|number"
    assert entropy_bits({"a": 4}) == 0.0


def test_mined_ngrams_are_the_frequent_ones():
    traces = ["4+8+0=12 3+1+1=05", "2+2+0=04 7+1+0=08", "1+1+0=02"]
    mined = mine_strategic_ngrams(traces, n_range=(3, 3), top_fraction=0.2)
    # digits normalised to 0: six 3-grams occur in >= 2 traces, four of them in all three;
    # the top 20% (ceil(1.2) = 2) by document frequency, ties alphabetical
    assert mined == {"+ 0 +": "+ 0 +", "+ 0 =": "+ 0 ="}
