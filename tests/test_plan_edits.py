"""Edit operators on hand-made chains, rendering, candidates and the mined vocabulary."""

from __future__ import annotations

import random

import pytest

from ponder.data import get_task
from ponder.plan.edits import ALL_OPS, Edit, EditRejected, Vocabulary, apply_edit, candidate_edits, mine_vocabulary
from ponder.plan.state import Chain, render_prompt

C = Chain(instructions=("add the numbers",), exemplars=("1+2=3",), steps=("a b c", "d e"), answer_format="think")


@pytest.mark.parametrize(
    "edit, field, expected",
    [
        (Edit("insert_word", "instructions", 0, 1, "two"), "instructions", ("add two the numbers",)),
        (Edit("insert_word", "steps", 1, 2, "f"), "steps", ("a b c", "d e f")),
        (Edit("delete_word", "instructions", 0, 0), "instructions", ("the numbers",)),
        (Edit("replace_word", "steps", 0, 1, "X"), "steps", ("a X c", "d e")),
        (Edit("reorder", index=0, pos=1), "steps", ("d e", "a b c")),
        (Edit("split", index=0, pos=2), "steps", ("a b", "c", "d e")),
        (Edit("merge", index=0), "steps", ("a b c d e",)),
        (Edit("delete_step", index=1), "steps", ("a b c",)),
        (Edit("insert_step", index=2, payload="g h"), "steps", ("a b c", "d e", "g h")),
        (Edit("rewrite_step", index=1, payload="new step"), "steps", ("a b c", "new step")),
        (Edit("add_instruction", index=0, payload="be brief"), "instructions", ("be brief", "add the numbers")),
        (Edit("replace_instruction", index=0, payload="sum them"), "instructions", ("sum them",)),
        (Edit("remove_instruction", index=0), "instructions", ()),
        (Edit("add_exemplar", index=1, payload="2+2=4"), "exemplars", ("1+2=3", "2+2=4")),
        (Edit("replace_exemplar", index=0, payload="5+5=10"), "exemplars", ("5+5=10",)),
        (Edit("remove_exemplar", index=0), "exemplars", ()),
        (Edit("bootstrap_demo", index=0, payload="8+7=15"), "exemplars", ("8+7=15",)),  # replaces
        (Edit("bootstrap_demo", index=1, payload="8+7=15"), "exemplars", ("1+2=3", "8+7=15")),  # appends
    ],
)
def test_each_operator(edit, field, expected):
    new = apply_edit(C, edit)
    assert new.lines(field) == expected
    for other in ("instructions", "exemplars", "steps"):  # nothing else moves
        if other != field:
            assert new.lines(other) == C.lines(other)
    assert C.steps == ("a b c", "d e")  # the input chain is untouched


def test_every_operator_is_covered_by_a_case():
    covered = {
        "insert_word",
        "delete_word",
        "replace_word",
        "reorder",
        "split",
        "merge",
        "delete_step",
        "insert_step",
        "rewrite_step",
        "add_instruction",
        "replace_instruction",
        "remove_instruction",
        "add_exemplar",
        "replace_exemplar",
        "remove_exemplar",
        "set_format",
        "bootstrap_demo",
    }
    assert covered == set(ALL_OPS)


def test_set_format_changes_the_rendering():
    new = apply_edit(C, Edit("set_format", payload="qa"))
    assert new.answer_format == "qa"
    assert render_prompt(new, "4+5=") == "add the numbers\n1+2=3\nQ: 4+5=\n<think>a b c d e</think>A: "
    assert render_prompt(C, "4+5=") == "add the numbers\n1+2=3\n4+5=<think>a b c d e"
    assert render_prompt(Chain(answer_format="direct"), "4+5=") == "4+5="


@pytest.mark.parametrize(
    "edit",
    [
        Edit("delete_step", index=5),  # out of range
        Edit("merge", index=1),  # no next step
        Edit("split", index=1, pos=0),  # nothing before the cut
        Edit("delete_word", "steps", 1, 9),
        Edit("set_format", payload="think"),  # no change
        Edit("set_format", payload="yaml"),  # unknown format
        Edit("replace_word", "instructions", 0, 0, "   "),  # empty payload
        Edit("insert_word", "nonsense", 0, 0, "x"),
        Edit("bootstrap_demo", index=2, payload="8+7=15"),  # past the append position
        Edit("bootstrap_demo", index=0, payload="1+2=3"),  # the same exemplar: no change
    ],
)
def test_bad_edits_are_rejected(edit):
    with pytest.raises(EditRejected):
        apply_edit(C, edit)


def test_deleting_the_last_word_of_a_line_is_rejected_not_an_empty_line():
    with pytest.raises(EditRejected):
        apply_edit(Chain(instructions=("only",)), Edit("delete_word", "instructions", 0, 0))


def test_empty_chain_only_offers_additions_and_format_changes():
    vocab = Vocabulary(words=["w"], instructions=["be brief"], exemplars=["1+1=2"], steps=["s"])
    cands = candidate_edits(Chain(), vocab, random.Random(0), max_candidates=100)
    ops = {e.op for e, _ in cands}
    assert ops == {"set_format", "add_instruction", "add_exemplar", "insert_step"}
    assert all(not c.is_empty or c.answer_format != "think" for _, c in cands)


def test_candidates_are_distinct_accepted_and_stratified():
    vocab = Vocabulary(words=["w", "v"], instructions=["be brief"], exemplars=["1+1=2"], steps=["s t"])
    chain = Chain(instructions=("one two three four five six seven eight nine ten",), steps=("a", "b"))
    cands = candidate_edits(chain, vocab, random.Random(0), max_candidates=8)
    assert len({c.key() for _, c in cands}) == len(cands) == 8
    assert len({e.op for e, _ in cands}) >= 6  # not eight word deletions of the long line
    short = candidate_edits(chain, vocab, random.Random(0), 100, accept=lambda c: not c.instructions)
    assert short and all(not c.instructions for _, c in short)


def test_chains_that_render_alike_share_a_key():
    assert Chain(steps=("a b",)).key() == Chain(steps=("a", "b")).key()
    assert Chain(steps=("a",)).key() != Chain(steps=("a",), answer_format="direct").key()
    assert Chain.from_json(C.to_json()) == C


def test_mined_vocabulary_comes_from_the_task():
    task = get_task("add3")
    vocab = mine_vocabulary(task, n=16)
    problems = task.problems(16, split="train")
    assert problems[0].prompt + problems[0].answer in vocab.exemplars
    assert set(problems[0].thought.split()) <= set(vocab.steps) | set(vocab.words) or any(
        s in vocab.steps for s in problems[0].thought.split()
    )
    assert all("+" in s and "=" in s for s in vocab.steps)  # worked steps, not toy strings
    sort = mine_vocabulary(get_task("sort"), n=8)
    assert any(s.startswith("min ") and " rest " in s for s in sort.steps)  # multi-word steps stay whole


@pytest.mark.parametrize("task_name", ["add1", "add3"])
def test_bootstrap_demos_are_training_problems_in_the_direct_form_never_held_out(task_name):
    task = get_task(task_name)
    vocab = mine_vocabulary(task, n=64, seed=3)
    train = task.problems(64, seed=3, split="train")
    heldout_prompts = {p.prompt for p in task.problems(64, seed=3, split="test")}
    direct = {p.prompt + p.answer: p for p in train}
    assert vocab.demos and set(vocab.demos) <= set(direct)  # "8+7=15": input then reference answer
    # not a held-out problem, and not one of the evaluation minibatch (the first training problems)
    assert not {direct[d].prompt for d in vocab.demos} & heldout_prompts
    assert not set(vocab.demos) & {p.prompt + p.answer for p in train[:8]}
    # the edit proposes only those payloads, at an exemplar position or appended
    rng = random.Random(0)
    chain = Chain(instructions=("Add.",), exemplars=("x <think>y</think>z", "Q: a A: b"), answer_format="direct")
    demos = [e for _ in range(20) for e in candidate_edits(chain, vocab, rng, 64) if e[0].op == "bootstrap_demo"]
    assert demos
    for e, new in demos:
        assert e.payload in vocab.demos and 0 <= e.index <= len(chain.exemplars)
        assert e.payload in new.exemplars and len(new.exemplars) == len(chain.exemplars) + (e.index == 2)


@pytest.mark.parametrize("task_name", ["add1", "add3"])
@pytest.mark.parametrize("seed", [0, 3])
def test_the_vocabulary_shows_no_input_the_environment_evaluates_solved(random_tiny, task_name, seed):
    """A solved exemplar, worked step or demonstration of an evaluated input scores that input by copying: the
    training value would reward memorising the minibatch (add1's and add2's exemplars were its own problems, 8 of 8)."""
    from types import SimpleNamespace

    import torch

    from ponder.jobs.plan import build_vocabulary, default_start
    from ponder.plan.env import PlanEnv, training_inputs

    task = get_task(task_name)
    model, tok = random_tiny
    lm = SimpleNamespace(model=model, tokenizer=tok, device=torch.device("cpu"))
    evaluated = training_inputs(task, 8, seed)
    assert [p.prompt for p in evaluated] == [p.prompt for p in PlanEnv(lm, task, n_train=8, seed=seed).train]
    solved = [p.prompt + p.answer for p in evaluated] + [f"Q: {p.prompt} A: {p.answer}" for p in evaluated]
    leaky = mine_vocabulary(task, seed=seed)  # nothing left out: the first mined problems are the evaluated ones
    assert any(x in e for x in solved for e in leaky.exemplars)
    vocab, calls = build_vocabulary(lm, task, seed, lm_proposals=2, n_train=8)
    assert calls == 4 and vocab.exemplars and vocab.demos
    payloads = vocab.exemplars + vocab.demos + vocab.steps
    assert not [(x, e) for x in solved for e in payloads if x in e]
    assert not any(p.prompt in e for p in evaluated for e in vocab.exemplars + vocab.demos)
    start = default_start(vocab, "instruction")
    assert not any(p.prompt in e for p in evaluated for e in start.exemplars)


def test_no_bootstrap_demo_without_demos():
    vocab = Vocabulary(words=["w"], instructions=["be brief"], exemplars=["1+1=2"], steps=["s"])
    cands = candidate_edits(C, vocab, random.Random(0), max_candidates=200)
    assert "bootstrap_demo" not in {e.op for e, _ in cands}
