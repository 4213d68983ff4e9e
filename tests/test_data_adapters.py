"""BIG-bench task files and reasoning-gym datasets as ponder tasks."""

from __future__ import annotations

import json

import pytest

from ponder.data import BigBenchError, BigBenchTask, ReasoningGymTask, Task, UnknownTaskError, get_task, is_held_out


def _write_task(tmp_path, examples, **extra):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"name": "mini", "description": "a test task", "examples": examples, **extra}))
    return path


GEN = {"input": "What is 2 plus 3?", "target": ["5", "five"]}
MC = {"input": "Is the sky green?", "target_scores": {"yes": 0, "no": 1, "maybe": 0}}


def test_bigbench_generative_and_multiple_choice(tmp_path):
    task = get_task(str(_write_task(tmp_path, [GEN, MC])))
    assert isinstance(task, BigBenchTask) and isinstance(task, Task) and task.name == "bigbench:mini"
    gen, mc = task.all_problems
    # BIG-bench's prompt, nothing stripped; options sorted then permuted by RandomState(42); scored in file order
    assert gen.prompt == "\nQ: What is 2 plus 3?\nA: " and gen.answer == "5" and gen.choices is None
    assert mc.prompt == "\nQ: Is the sky green?\n  choice: maybe\n  choice: no\n  choice: yes\nA: "
    assert mc.choices == ("yes", "no", "maybe") and mc.answer == "no"
    # A file without "metrics": exact_str_match for target examples, multiple_choice_grade for target_scores ones
    assert task.metrics == ["exact_str_match", "multiple_choice_grade"] and task.preferred_score == "exact_str_match"

    # A fake model: answers the generative question right, the multiple-choice one wrong.
    def model(prompt: str) -> str:
        return "<think>2+3=5</think>five" if "plus" in prompt else "yes"

    assert task.score(gen, model(gen.prompt)) == 1.0
    assert task.score(mc, model(mc.prompt)) == 0.0
    # exact_str_match after BIG-bench's default regex (up to the first . ? ! ; or newline): no normalisation
    assert task.score(gen, "5") == 1.0 and task.score(gen, "five. Yes") == 1.0
    assert task.score(gen, " FIVE.") == 0.0 and task.score(gen, "6") == 0.0
    # a multiple-choice-only example by generation (ponder's reward rule): the option named, case-insensitively
    assert task.score(mc, "No") == 1.0 and task.score(mc, "<think>hmm</think>no\nbecause") == 1.0
    assert task.score(mc, "<think>no") == 0.0 and task.score(mc, "n") == 0.0
    assert task.score(gen, "<think>5") == 0.0


def test_bigbench_custom_prefixes_and_order_is_stable(tmp_path):
    path = _write_task(
        tmp_path,
        [MC],
        task_prefix="Answer yes or no.",
        example_input_prefix="\nQuestion: ",
        example_output_prefix="\nAnswer: ",
        append_choices_to_input=False,
    )
    p = BigBenchTask(path).all_problems[0]
    assert p.prompt == "Answer yes or no.\nQuestion: Is the sky green?\nAnswer: "
    assert BigBenchTask(path).all_problems[0].choices == p.choices


def test_bigbench_splits(tmp_path):
    examples = [{"input": f"{i} + 1 =", "target": str(i + 1)} for i in range(60)]
    task = BigBenchTask(_write_task(tmp_path, examples))
    train, test = task.split_problems("train"), task.split_problems("test")
    assert len(train) + len(test) == 60 and test and train
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert all(is_held_out(p.prompt) for p in test)  # hash split used when both sides are non-empty
    assert task.problems(10, seed=1) == task.problems(10, seed=1)
    assert task.problems(10, seed=1) != task.problems(10, seed=2)
    assert len(task.problems(1000)) == len(train) and len(task.problems(5, split="test")) == min(5, len(test))

    small = BigBenchTask(_write_task(tmp_path, [GEN, MC, {"input": "x", "target": "y"}]))
    train, test = small.split_problems("train"), small.split_problems("test")
    assert len(train) == 2 and len(test) == 1  # fallback: 10% (at least one) held out
    assert BigBenchTask(tmp_path / "task.json").split_problems("test") == test  # same on every load


def test_bigbench_errors(tmp_path):
    with pytest.raises(BigBenchError, match="does not exist"):
        get_task(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"examples": [\n  {"input": "a",, }\n]}')
    with pytest.raises(BigBenchError, match=r"bad\.json.*not valid JSON.*line 2, column"):
        BigBenchTask(bad)
    no_ex = tmp_path / "noex.json"
    no_ex.write_text('{"name": "x"}')
    with pytest.raises(BigBenchError, match='noex.json.*"examples"'):
        BigBenchTask(no_ex)
    with pytest.raises(BigBenchError, match="example 0"):
        BigBenchTask(_write_task(tmp_path, [{"input": "no target"}]))
    assert isinstance(get_task(str(_write_task(tmp_path, [GEN, MC]).parent)), BigBenchTask)  # folder with task.json


@pytest.fixture(scope="module")
def arithmetic():
    return ReasoningGymTask("basic_arithmetic", size=200)


def test_reasoning_gym_problems_and_own_scorer(arithmetic):
    assert isinstance(arithmetic, Task) and arithmetic.name == "rg:basic_arithmetic"
    train = arithmetic.problems(40, seed=0)
    test = arithmetic.problems(10, seed=0, split="test")
    assert len(train) == 40 and len(test) == 10
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert all(not is_held_out(p.prompt) for p in train) and all(is_held_out(p.prompt) for p in test)
    assert arithmetic.problems(5, seed=0) == train[:5] and arithmetic.problems(5, seed=1) != train[:5]
    for p in train[:10]:
        entry = p.meta["entry"]
        assert p.prompt == entry["question"].strip() + "\nAnswer: " and p.answer == entry["answer"]
        assert arithmetic.score(p, p.answer) == 1.0
        assert arithmetic.score(p, f"<think>compute it</think>{p.answer}\nextra") == 1.0
        assert arithmetic.score(p, str(int(p.answer) + 1)) < 1.0
        assert arithmetic.score(p, f"<think>{p.answer}") == 0.0
        assert arithmetic.score(p, "") == 0.0


def test_reasoning_gym_multiline_answers_and_options():
    task = ReasoningGymTask("rotate_matrix", size=50, min_n=2, max_n=3)
    p = task.problems(1)[0]
    assert "\n" in p.answer
    assert task.score(p, "<think>rotate</think>" + p.answer) == 1.0
    assert task.extract_answer(p.answer) == p.answer.splitlines()[0]


def test_reasoning_gym_errors():
    with pytest.raises(UnknownTaskError, match="basic_arithmetic"):
        get_task("rg:no_such_dataset")
    with pytest.raises(ValueError, match="invalid options"):
        ReasoningGymTask("basic_arithmetic", not_an_option=3)
    assert isinstance(get_task("rg:basic_arithmetic"), ReasoningGymTask)
