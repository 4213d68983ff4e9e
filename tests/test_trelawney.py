"""TRELAWNEY lookahead spans: the transform against hand-made cases, the graph-walk task, goal-span inference."""

import itertools
import json
import random

import pytest
import torch

from ponder.data.graphs import GraphPaths
from ponder.data.registry import get_task
from ponder.data.trelawney import (
    LOOKAHEAD_CLOSE,
    LOOKAHEAD_OPEN,
    GoalTask,
    LookaheadConfig,
    ensure_lookahead_tokens,
    future_piece,
    insert_lookahead,
    insertion_range,
    iter_task_lookahead_documents,
    lookahead_document,
    lookahead_token_ids,
    problem_ids,
    strip_lookahead,
    with_goal,
)
from ponder.data.windows import id_windows
from ponder.eval.accuracy import evaluate
from ponder.train.next_token import document_token_windows

OP, CL = 900, 901  # stand-in delimiter ids for the pure functions


def test_insert_lookahead_copies_the_future_piece_between_delimiters():
    ids = [1, 10, 11, 12, 13]
    assert insert_lookahead(ids, at=2, start=3, end=5, open_id=OP, close_id=CL) == [1, 10, OP, 12, 13, CL, 11, 12, 13]
    # the piece may start right at the insertion point (the very next tokens)
    assert insert_lookahead(ids, 1, 1, 2, OP, CL) == [1, OP, 10, CL, 10, 11, 12, 13]
    assert ids == [1, 10, 11, 12, 13]  # not modified in place
    for at, start, end in [(3, 2, 4), (1, 2, 2), (1, 4, 6), (-1, 0, 1)]:  # past piece, empty piece, beyond the end
        with pytest.raises(ValueError, match="at <= start < end"):
            insert_lookahead(ids, at, start, end, OP, CL)


def test_insertion_range_per_position():
    assert insertion_range(6, prefix=1, answer_start=4, position="anywhere") == (1, 5)
    assert insertion_range(6, prefix=1, answer_start=4, position="answer") == (4, 5)
    assert insertion_range(6, prefix=1, answer_start=4, position="answer_start") == (4, 4)
    assert insertion_range(6, prefix=1, answer_start=6, position="answer") is None  # empty answer: nothing ahead
    assert insertion_range(1, prefix=1, answer_start=None, position="anywhere") is None  # BOS only
    with pytest.raises(ValueError, match="anywhere"):
        insertion_range(6, prefix=1, answer_start=None, position="answer")


def test_future_piece_end_and_random():
    rng = random.Random(0)
    assert future_piece(6, at=2, span_len=2, goal="end", rng=rng) == (4, 6)
    assert future_piece(6, at=5, span_len=3, goal="end", rng=rng) == (5, 6)  # clipped to what lies ahead
    assert future_piece(6, at=4, span_len=5, goal="random", rng=rng) == (4, 6)
    starts = {future_piece(10, at=3, span_len=2, goal="random", rng=rng)[0] for _ in range(300)}
    assert starts == set(range(3, 9))  # every admissible start, none outside [at, length - span]


def test_lookahead_document_answer_start_end_is_the_goal_format():
    ids = [1, 20, 21, 22, 30, 31]  # BOS, prompt 20..22, answer 30 31
    cfg = LookaheadConfig(share=1.0, position="answer_start", goal="end", span_min=1, span_max=1)
    out = lookahead_document(ids, cfg, random.Random(0), OP, CL, prefix=1, answer_start=4)
    assert out == [1, 20, 21, 22, OP, 31, CL, 30, 31]
    cfg2 = cfg.model_copy(update={"span_min": 2, "span_max": 2})
    assert lookahead_document(ids, cfg2, random.Random(0), OP, CL, answer_start=4) == [
        1,
        20,
        21,
        22,
        OP,
        30,
        31,
        CL,
        30,
        31,
    ]


@pytest.mark.parametrize("position", ["anywhere", "answer"])
def test_lookahead_document_random_spans_are_copies_of_later_tokens(position):
    ids = [1, *range(20, 30), *range(30, 36)]  # answer starts at index 11
    cfg = LookaheadConfig(share=1.0, position=position, goal="random", span_min=1, span_max=3)
    rng = random.Random(1)
    lengths = set()
    for _ in range(200):
        out = lookahead_document(ids, cfg, rng, OP, CL, prefix=1, answer_start=11)
        i, j = out.index(OP), out.index(CL)
        piece = out[i + 1 : j]
        rest = out[:i] + out[j + 1 :]
        assert rest == ids  # removing the span gives the document back
        assert 1 <= len(piece) <= 3
        lengths.add(len(piece))
        # the piece is a contiguous run of tokens at or after the insertion point
        assert any(ids[s : s + len(piece)] == piece for s in range(i, len(ids)))
        assert i >= (11 if position == "answer" else 1)
    assert lengths == {1, 2, 3}


def test_lookahead_share():
    ids = [1, 2, 3, 4, 5]
    rng = random.Random(3)
    for share, lo, hi in [(0.0, 0, 0), (1.0, 2000, 2000), (0.3, 530, 670)]:  # 0.3: +-3.5 binomial sd of 2000 draws
        cfg = LookaheadConfig(share=share, position="anywhere", goal="random")
        changed = sum(OP in lookahead_document(ids, cfg, rng, OP, CL) for _ in range(2000))
        assert lo <= changed <= hi


def test_config_rejects_bad_spans():
    with pytest.raises(ValueError, match="span_min"):
        LookaheadConfig(span_min=3, span_max=2)
    with pytest.raises(ValueError):
        LookaheadConfig(share=1.5)


def test_delimiters_are_single_special_tokens(random_tiny):
    model, _ = random_tiny
    from ponder.lm.tiny import build_char_tokenizer

    tok = build_char_tokenizer()  # a fresh one: registration mutates it
    with pytest.raises(ValueError, match="ensure_lookahead_tokens"):
        lookahead_token_ids(tok)
    rows = model.get_input_embeddings().weight.shape[0]
    assert ensure_lookahead_tokens(model, tok) == 2
    assert ensure_lookahead_tokens(model, tok) == 0
    open_id, close_id = lookahead_token_ids(tok)
    assert model.get_input_embeddings().weight.shape[0] == rows + 2
    ids = tok(f"a{LOOKAHEAD_OPEN}b{LOOKAHEAD_CLOSE}", add_special_tokens=False)["input_ids"]
    assert ids == [tok.convert_tokens_to_ids("a"), open_id, tok.convert_tokens_to_ids("b"), close_id]


def test_strip_and_with_goal():
    assert with_goal("ab|a>", "d") == "ab|a><lookahead>d</lookahead>"
    assert strip_lookahead("<lookahead>d</lookahead>qd") == "qd"
    assert strip_lookahead("q<lookahead>x</lookahead>d<lookahead>never closed") == "qd"


def test_graph_paths_problems_and_scoring():
    task = get_task("paths")
    assert isinstance(task, GraphPaths) and task.name == "paths"
    assert get_task("paths12x3-1-3").name == "paths12x3-1-3" and len(get_task("paths12x3-1-3").node_names) == 12
    # the graph is fixed by its size (the same in every process)
    assert task.edges["a"] == ["b", "d"] and task.edges["d"] == ["g", "r"] and task.edges["g"] == ["s", "t"]
    assert GraphPaths().edges == task.edges
    assert all(len(out) == 2 and v not in out for v, out in task.edges.items())
    train = task.problems(150, seed=1)
    test = task.problems(47, split="test")
    assert len({task.split_key(p) for p in test}) == 47  # every held-out pair once
    assert not {task.split_key(p) for p in train} & {task.split_key(p) for p in test}
    for p in train + test:
        start, goal = p.meta["start"], p.meta["goal"]
        assert p.prompt == f"{start}>" and p.answer[-1] == goal
        assert task.is_walk(start, p.answer) and len(p.answer) == task.dist[start][goal]  # a shortest walk
        assert 2 <= len(p.answer) <= 4
    hand = task.make("a", "g", "dg")
    assert task.score(hand, "dg") == 1 and task.score(hand, "dgs") == 0 and task.score(hand, "dr") == 0
    assert task.score(hand, "bg") == 0 and task.score(hand, "") == 0  # a -> b -> g is no walk
    reach, valid = task.rescored("reach"), task.rescored("valid")
    assert reach.score(hand, "dgs") == 1 and reach.score(hand, "drg") == 0 and reach.score(hand, "dr") == 0
    assert valid.score(hand, "dr") == 1 and valid.score(hand, "dx") == 0
    assert reach.problems(5, seed=2) == task.problems(5, seed=2)  # same problems, only the scoring differs
    for bad in (dict(nodes=30), dict(degree=20), dict(min_hops=3, max_hops=2), dict(scoring="near")):
        with pytest.raises(ValueError):
            GraphPaths(**bad)


def test_task_stream_plain_when_share_zero_and_reproducible(char_tokenizer):
    tok = char_tokenizer
    task = GraphPaths()
    with pytest.raises(ValueError, match="ensure_lookahead_tokens"):
        next(iter_task_lookahead_documents(task, tok, LookaheadConfig()))
    from ponder.lm.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [LOOKAHEAD_OPEN, LOOKAHEAD_CLOSE]})
    plain = list(itertools.islice(iter_task_lookahead_documents(task, tok, LookaheadConfig(share=0.0)), 20))
    problems = list(itertools.islice(task.iter_problems(0, "train"), 20))
    assert plain == [problem_ids(tok, p)[0] for p in problems]
    assert tok.decode(plain[0], skip_special_tokens=True) == problems[0].prompt + problems[0].answer
    cfg = LookaheadConfig(share=0.5, position="anywhere", goal="random", span_max=3)
    a = list(itertools.islice(iter_task_lookahead_documents(task, tok, cfg, seed=1), 50))
    assert a == list(itertools.islice(iter_task_lookahead_documents(task, tok, cfg, seed=1), 50))
    assert 10 < sum(tok.convert_tokens_to_ids(LOOKAHEAD_OPEN) in d for d in a) < 40


def test_goal_prompt_is_the_prefix_of_a_training_document():
    """The inference prompt with the goal span is token for token how training documents begin."""
    from ponder.lm.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [LOOKAHEAD_OPEN, LOOKAHEAD_CLOSE]})
    open_id, close_id = lookahead_token_ids(tok)
    task = GraphPaths()
    cfg = LookaheadConfig(share=1.0, position="answer_start", goal="end")
    problem = next(task.iter_problems(0, "train"))
    doc = next(iter_task_lookahead_documents(task, tok, cfg))
    prompt_ids = tok(with_goal(problem.prompt, GoalTask(task).goal(problem)))["input_ids"]
    assert doc[: len(prompt_ids)] == prompt_ids
    assert prompt_ids[-3:] == [open_id, tok.convert_tokens_to_ids(problem.meta["goal"]), close_id]
    assert tok.decode(doc[len(prompt_ids) :]) == problem.answer


def test_goal_task_prompts_scoring_and_evaluate_wiring(random_tiny):
    model, _ = random_tiny
    from ponder.lm.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    ensure_lookahead_tokens(model, tok)
    open_id, close_id = lookahead_token_ids(tok)
    task = GraphPaths()
    goal_task, control = GoalTask(task), GoalTask(task, goal=None)
    problems = goal_task.problems(4, split="test")
    plain = task.problems(4, split="test")
    assert [p.prompt for p in problems] == [with_goal(q.prompt, q.meta["goal"]) for q in plain]
    assert control.problems(4, split="test") == plain and control.name == "paths" and goal_task.name == "paths+goal"
    p = problems[0]
    assert goal_task.score(p, f"{LOOKAHEAD_OPEN}{p.meta['goal']}{LOOKAHEAD_CLOSE}{p.answer}") == 1.0
    assert goal_task.score(p, p.answer) == 1.0 and goal_task.score(p, "zz") == 0.0

    seen = []
    handle = model.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(kw["input_ids"].clone()), with_kwargs=True
    )
    try:
        evaluate(model, tok, goal_task, n=4, modes=("no_think",), max_answer_tokens=2)
    finally:
        handle.remove()
    first = seen[0]  # the prefill: left-padded prompts, each ending with its goal span
    assert first.shape[0] == 4
    goals = sorted(tok.convert_tokens_to_ids(q.meta["goal"]) for q in plain)
    assert sorted(row[-2].item() for row in first) == goals
    assert torch.all(first[:, -3] == open_id) and torch.all(first[:, -1] == close_id)


def test_token_id_documents_are_windowed_like_texts(char_tokenizer):
    tok = char_tokenizer
    texts = ["ab", "abcdefghij"]
    from_text = list(document_token_windows(tok, iter(texts), 4))
    from_ids = list(document_token_windows(tok, iter([tok(t)["input_ids"] for t in texts]), 4))
    assert from_ids == from_text and len(from_text) == 1 + 3  # BOS a b EOS; BOS + 10 letters + EOS in 4s
    assert list(id_windows([1, 2, 3, 4, 5], 2, eos_id=9)) == [[1, 2], [3, 4], [5, 9]]
    assert list(id_windows([1, 2, 3], 4)) == [[1, 2, 3]]


def test_cli_trelawney_trains_and_reports_goal_accuracy(tmp_path, one_thread, capsys):
    from ponder.cli import main

    out, js = tmp_path / "run", tmp_path / "s.json"
    argv = ["trelawney", "--out", str(out), "--json", str(js), "--quiet", "--eval-n", "6", "--train.steps", "3"]
    argv += ["--train.batch-size", "4", "--arch.hidden-size", "32", "--arch.num-layers", "1", "--arch.num-heads", "2"]
    argv += ["--arch.intermediate-size", "64"]
    assert main(argv) == 0
    summary = json.loads(js.read_text())
    assert summary["steps"] == 3 and summary["tokens_seen"] > 0
    for key in ("goal", "no_goal", "goal_valid", "no_goal_valid"):
        assert 0.0 <= summary[key] <= 1.0
    assert (out / "final" / "config.json").is_file()
    from transformers import AutoTokenizer

    assert lookahead_token_ids(AutoTokenizer.from_pretrained(out / "final"))  # saved with the delimiters
    assert main(["trelawney", "--task", "add2", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "records no goal" in captured.out + captured.err
