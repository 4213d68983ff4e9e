"""BIG-bench JSON tasks as BIG-bench defines them: prompts, answer post-processing, metrics, and the eval that runs them.

Fixtures are excerpts of real BIG-bench files (tests/fixtures/bigbench/README.md). Expected prompts,
post-processed answers and tie-breaks were produced by BIG-bench v1.0.0's own ``JsonTask``,
``postprocess_output`` and ``argmax`` (bench/bigbench_crosscheck.py imports them); metric values
are computed by hand in the comments.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ponder.data import get_task
from ponder.data.bigbench import DEFAULT_OUTPUT_REGEX, BigBenchError, BigBenchTask, postprocess
from ponder.data.bigbench_metrics import (
    bigbench_argmax,
    brier_score,
    expected_calibration_error,
    log_likelihood,
    macro_f1,
    measure,
    multiple_choice_grade_scores,
    normalized_log_probs,
    numeric_match_scores,
    weighted_log_probability_scores,
    weighted_probability_scores,
)
from ponder.eval.accuracy import evaluate
from ponder.eval.results import mode_warnings
from ponder.lm.delimiters import ensure_think_tokens
from ponder.lm.score import score_pairs
from ponder.lm.thinking import ThinkSettings, ThoughtFormat

FIXTURES = Path(__file__).parent / "fixtures" / "bigbench"
ADDITION, THREE_OBJECTS, DISAMBIGUATION = (
    FIXTURES / f"{n}.json" for n in ("3_digit_addition", "three_objects", "disambiguation_qa")
)
PREFIX_3OBJ = (
    "The following paragraphs each describe a set of three objects arranged in a fixed order. "
    "The statements are logically consistent within each paragraph.\n\n"
)


# ---------------------------------------------------------------- prompts and targets


def test_generative_file_with_target_scores_shows_the_options_in_bigbench_order():
    task = BigBenchTask(ADDITION)
    p = task.all_problems[0]
    # BIG-bench's JsonTask: the sorted options permuted by RandomState(42), appended although the metric is generative.
    assert p.prompt == (
        "\nQ: What is 161 plus 390?\n  choice: 16957\n  choice: 305\n  choice: banana\n  choice: 5\n"
        "  choice: 908\n  choice: 551\n  choice: house\nA: "
    )
    assert p.choices == ("305", "908", "5", "16957", "banana", "house", "551")  # scored in file order
    assert p.meta["targets"] == ["551"] and p.meta["target_scores"]["551"] == 1.0
    assert task.metrics == ["exact_str_match", "multiple_choice_grade"] and task.preferred_score == "exact_str_match"
    assert task.generative_metrics == ["exact_str_match"]
    assert task.multiple_choice_metrics == [
        "multiple_choice_grade",
        "calibration_multiple_choice_brier_score",
        "expected_calibration_error",
    ]
    assert task.output_regex == r"[-+]?\d+" and task.stop_string is None


def test_multiple_choice_without_choices_in_the_input():
    task = BigBenchTask(THREE_OBJECTS)
    first, second = task.all_problems[:2]
    assert first.prompt == (
        PREFIX_3OBJ + "On a shelf, there are three books: a black book, an orange book, and a blue book. "
        "The blue book is to the right of the orange book. The orange book is to the right of the black book. "
    )
    assert "choice" not in first.prompt and first.prompt == second.prompt  # same input, other options
    assert first.choices == (
        "The black book is the leftmost.",
        "The orange book is the leftmost.",
        "The blue book is the leftmost.",
    )
    assert first.meta["targets"] == ["The black book is the leftmost."]  # first option of highest score
    assert second.meta["targets"] == ["The orange book is the second from the left."]
    assert task.preferred_score == "multiple_choice_grade" and task.generative_metrics == []
    assert task.output_regex == DEFAULT_OUTPUT_REGEX  # neither output_regex nor stop_string in the file


def test_multiple_choice_with_choices_and_custom_prefixes():
    p = BigBenchTask(DISAMBIGUATION).all_problems[0]
    assert p.prompt == (
        "In the following sentences, explain the antecedent of the pronoun (which thing the pronoun refers to), "
        "or state that it is ambiguous.\n\nSentence: After meeting with the producers, Sam went to his office.\n"
        "  choice: Ambiguous\n  choice: The office was Sam's office\n  choice: The office was the producers' office\n"
        "Pronoun identification: "
    )
    assert p.meta["answer_prefix"] == "\nPronoun identification: "


def test_duplicates_dropped_and_files_bigbench_rejects(tmp_path):
    data = json.loads(ADDITION.read_text())
    data["examples"] = data["examples"][:2] + data["examples"][:1]
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(data))
    assert len(BigBenchTask(path).all_problems) == 2
    for bad, match in [
        ({"metrics": ["accuracy"]}, "names metric 'accuracy'"),
        ({"metrics": ["multiple_choice_grade"], "examples": [{"input": "a", "target": "b"}]}, 'no "target_scores"'),
        ({"examples": [{"input": "a", "target_scores": {"x": 0, "y": 0}}]}, "no correct choice"),
    ]:
        path.write_text(json.dumps({**data, **bad}))
        with pytest.raises(BigBenchError, match=match):
            BigBenchTask(path)


def test_split_all_is_bigbench_max_examples_draw():
    task = BigBenchTask(ADDITION)
    # BIG-bench's max_examples draw, rng.choice(samples, 2, replace=False) with RandomState(42), takes
    # permutation(4)[:2] = [1, 3]: the 2nd and 4th examples.
    drawn = task.problems(2, seed=42, split="all")
    assert drawn == [task.all_problems[1], task.all_problems[3]]
    assert len(task.problems(10, split="all")) == 4


def test_few_shot_prompts_are_bigbench_make_nshot_dataset():
    task = BigBenchTask(ADDITION)
    task.shots = 1
    # BIG-bench's make_nshot_dataset (max_examples 2, random_seed 42): queries 2nd and 4th example; the 2nd is led by
    # the 1st example and its target, joined by the file's separator (default "\n").
    first, second = task.problems(2, seed=42, split="all")
    assert first.prompt == (
        "\nQ: What is 161 plus 390?\n  choice: 16957\n  choice: 305\n  choice: banana\n  choice: 5\n  choice: 908\n"
        "  choice: 551\n  choice: house\nA: 551\n"
        "\nQ: What is 576 plus 770?\n  choice: 1136\n  choice: 1346\n  choice: banana\n  choice: 2091\n"
        "  choice: 792451\n  choice: 59\n  choice: house\nA: "
    )
    assert first.meta["targets"] == ["1346"] and second.meta["targets"] == ["1752"]
    assert (
        second.prompt.startswith("\nQ: What is 576 plus 770?")
        and "A: 1346\n\nQ: What is 988 plus 764?" in second.prompt
    )
    task = BigBenchTask(THREE_OBJECTS)
    task.shots = 1
    (p,) = task.problems(1, seed=42, split="all")
    # the task prefix once, then shot and query separated by the file's "\n\n"
    assert p.prompt.startswith(PREFIX_3OBJ + "On a shelf") and p.prompt.count(PREFIX_3OBJ) == 1
    assert "The blue book is the rightmost.\n\nOn a shelf" in p.prompt
    with pytest.raises(BigBenchError, match="split 'all' only"):
        task.problems(1, split="test")


# ---------------------------------------------------------------- answers


def test_postprocess_is_bigbench_postprocess_output():
    regex = r"[-+]?\d+"
    # The first match, not the last: the model's "161 + 390 = 551" answers 161.
    assert postprocess("161 + 390 = 551", None, regex) == "161"
    assert postprocess(": 1009", None, regex) == "1009"
    assert postprocess("none here", None, regex) == ""
    assert postprocess(" Paris. The", None, DEFAULT_OUTPUT_REGEX) == " Paris"  # no stripping: exact match fails
    assert postprocess("\n\nfoo", None, DEFAULT_OUTPUT_REGEX) == "foo"
    assert postprocess("abc.def", ".", None) == "abc." and postprocess(".abc.d", ".", None) == ".abc.d"


def test_score_is_exact_str_match_of_the_answer_after_the_thought():
    task = BigBenchTask(ADDITION)
    p = task.all_problems[0]
    assert task.score(p, "551") == 1.0 and task.score(p, "<think>390+161</think> = 551") == 1.0
    assert task.score(p, "161 + 390 = 551") == 0.0  # first match
    assert task.score(p, "<think>551") == 0.0  # an open thought has no answer
    assert task.extract_answer("<think>x</think>no number") is None
    assert "first match of output_regex '[-+]?\\\\d+'" in task.answer_rule_description()


# ---------------------------------------------------------------- metrics (hand-computed)


def test_multiple_choice_grade_argmax_and_ties():
    choices = [["a", "b", "c"], ["a", "b"]]
    scores = [{"a": 0, "b": 1, "c": 0}, {"a": 0.5, "b": 1.0}]
    # example 1 picks b (score 1); example 2 picks a (score 0.5: partial credit) -> mean 0.75
    assert multiple_choice_grade_scores(choices, scores, [[-2.0, -0.5, -3.0], [-0.1, -2.0]]) == [1.0, 0.5]
    # Ties: BIG-bench's argmax hashes the float64 array (values from its own task_metrics.argmax).
    assert bigbench_argmax([0.0, 0.0]) == 1
    assert bigbench_argmax([-1.0, -1.0, -3.0]) == 1
    assert bigbench_argmax([-2.0, -1.0, -1.0, -1.0]) == 2
    # Normalised log-probs keep the argmax: x - logsumexp(x).
    norm = normalized_log_probs([math.log(0.2), math.log(0.2)])
    assert norm == pytest.approx([math.log(0.5), math.log(0.5)])


def test_calibration_metrics_by_hand():
    lp = [[math.log(0.75), math.log(0.25)], [math.log(0.4), math.log(0.6)]]
    choices, scores = [["x", "y"], ["x", "y"]], [{"x": 1, "y": 0}, {"x": 1, "y": 0}]
    # Brier: ex1 (0.75-1)^2 + 0.25^2 = 0.125; ex2 (0.4-1)^2 + 0.6^2 = 0.72; over 4 option entries: 0.845 / 4
    assert brier_score(choices, scores, lp) == pytest.approx(0.845 / 4)
    # ECE: ex1 conf 0.75 (bucket 11, correct), ex2 conf 0.6 (bucket 9, wrong): 0.5*0.25 + 0.5*0.6
    assert expected_calibration_error(choices, scores, lp) == pytest.approx(0.425)
    # weighted log-probs / probs read the absolute log-probs: score x log p, score x p
    absolute = [[-1.0, -2.0], [-3.0, -0.5]]
    assert weighted_log_probability_scores(choices, scores, absolute) == [-1.0, -3.0]
    assert weighted_probability_scores(choices, scores, absolute) == pytest.approx([math.exp(-1), math.exp(-3)])


def test_macro_f1_numeric_match_and_log_likelihood_by_hand():
    choices = [["a", "b"]] * 3
    scores = [{"a": 1, "b": 0}, {"a": 1, "b": 0}, {"a": 0, "b": 1}]
    # true a,a,b; predicted a,b,b: F1(a) = 2/(2+0+1), F1(b) = 2/(2+1+0); macro 2/3
    assert macro_f1(choices, scores, [[0.0, -1.0], [-1.0, 0.0], [-1.0, 0.0]]) == pytest.approx(2 / 3)
    assert numeric_match_scores([["100"], ["100"], ["0"], ["7"]], ["105", "111", "0.05", "seven"]) == [1, 0, 1, 0]
    ll = log_likelihood([[-2.0], [-4.0]], [["ab cd"], ["x"]])
    assert ll == pytest.approx(
        {"log_likelihood": -3.0, "log_likelihood_per_word": (-1.0 - 4.0) / 2, "log_likelihood_per_char": (-0.4 - 4) / 2}
    )
    assert log_likelihood([[-1.0, -1.0]], [["a", "b"]])["log_likelihood"] == pytest.approx(-1.0 + math.log(2))


def test_measure_reports_every_metric_of_a_file_with_target_and_target_scores():
    targets = [["551"], ["1346"]]
    choices = [["305", "551"], ["1346", "59"]]
    scores = [{"305": 0.0, "551": 1.0}, {"1346": 1.0, "59": 0.0}]
    absolute = [[-1.0, -2.0], [-1.0, -3.0]]  # picks 305 (wrong), 1346 (right)
    agg, per = measure(
        ["exact_str_match", "multiple_choice_grade", "calibration_multiple_choice_brier_score"],
        targets,
        responses=["551", "161"],
        choices=choices,
        target_scores=scores,
        absolute_log_probs=absolute,
    )
    assert agg["exact_str_match"] == 0.5 and agg["multiple_choice_grade"] == 0.5
    assert per[0] == {
        "exact_str_match": 1.0,
        "multiple_choice_grade": 0.0,
        "calibration_multiple_choice_brier_score": per[0]["calibration_multiple_choice_brier_score"],
    }
    # softmax of (-1, -2) puts p on 305 (target 0) and 1 - p on 551 (target 1): (p^2 + (1 - p - 1)^2) / 2 options
    p = 1 / (1 + math.exp(-1))
    assert per[0]["calibration_multiple_choice_brier_score"] == pytest.approx(p**2)


def test_warnings_when_most_thoughts_run_unclosed_or_no_answer():
    assert mode_warnings("think", True, 0.5, 0.5, 32) == []
    lines = mode_warnings("think", True, 0.75, 0.9, 32)
    assert len(lines) == 2 and "75% of thoughts ran unclosed" in lines[0] and "90% of examples" in lines[1]
    assert mode_warnings("no_think", False, 1.0, 0.0, 32) == []


# ---------------------------------------------------------------- the eval, on a small model


@pytest.fixture
def tiny(random_tiny):
    model, tok = random_tiny
    ensure_think_tokens(model, tok)
    return model, tok


@pytest.mark.parametrize("mode", ["no_think", "think"])
def test_eval_scores_options_by_log_likelihood_through_score_pairs(tiny, mode):
    model, tok = tiny
    task = get_task(str(THREE_OBJECTS))
    res = evaluate(model, tok, task, n=3, split="all", modes=(mode,), max_thought_tokens=4, batch_size=2).modes[mode]
    fmt = ThoughtFormat.of(model, tok, ThinkSettings(chat_template="off"))
    assert res.metric == "multiple_choice_grade" and res.accuracy == res.metrics["multiple_choice_grade"]
    grades = []
    for ex, p in zip(res.examples, task.problems(3, split="all")):
        context = fmt.prompt_ids(tok, [p.prompt])[0]
        if mode == "think":  # the option follows the example's own thought
            thought = tok(ex["raw_output"][len("<think>") : -len("</think>")], add_special_tokens=False)["input_ids"]
            context = context + [fmt.open_id, *thought, fmt.close_id]
        direct = score_pairs(model, tok, [context] * 3, list(p.choices)).sum.tolist()
        assert list(ex["option_log_probs"].values()) == pytest.approx(direct, abs=1e-4)
        best = max(range(3), key=lambda i: direct[i])
        grades.append(p.meta["target_scores"][p.choices[best]])
        assert ex["answer"] == p.choices[best] and ex["scores"]["multiple_choice_grade"] == grades[-1]
    assert res.accuracy == pytest.approx(sum(grades) / 3)
    assert set(res.metrics) == {
        "multiple_choice_grade",
        "calibration_multiple_choice_brier_score",
        "expected_calibration_error",
    }
    assert res.closed_fraction == (1.0 if mode == "no_think" else sum(e["closed"] for e in res.examples) / 3)


def test_eval_generative_file_reports_both_metrics_and_what_the_model_wrote(tiny):
    model, tok = tiny
    task = get_task(str(ADDITION))
    result = evaluate(model, tok, task, n=4, split="all", modes=("think",), max_thought_tokens=3, max_answer_tokens=6)
    data = result.to_json(samples=2)["think"]
    assert data["metric"] == "exact_str_match" and set(data["metrics"]) >= {"exact_str_match", "multiple_choice_grade"}
    assert len(data["examples"]) == 2 and "answer_rule" in data and 0 <= data["closed_fraction"] <= 1
    for ex in data["examples"]:
        assert set(ex) >= {"prompt", "raw_output", "answer", "targets", "scores", "closed"}
        assert ex["answer"] == postprocess(ex["raw_output"].split("</think>", 1)[1], None, r"[-+]?\d+")
        assert ex["scores"]["exact_str_match"] == float(ex["answer"] in ex["targets"])
    assert "examples" not in result.to_json()["think"]  # other jobs' JSON stays small


def test_chat_template_goes_around_the_example_and_the_scaffold_opens_the_answer(char_tokenizer):
    tok = char_tokenizer
    tok.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    )
    try:
        fmt = ThoughtFormat(open_id=1, close_id=2, eos_ids=(2,), chat=True)
        p = BigBenchTask(ADDITION).all_problems[0]
        ids = fmt.prompt_ids(tok, [p.prompt], [p.meta["answer_prefix"]])[0]
        text = tok.decode(ids)
        assert text.endswith(
            "<user>Q: What is 161 plus 390?\n  choice: 16957\n  choice: 305\n  choice: banana\n"
            "  choice: 5\n  choice: 908\n  choice: 551\n  choice: house\n<a>A: "
        )
        # without a template the prompt is BIG-bench's, whole
        plain = ThoughtFormat(open_id=1, close_id=2, eos_ids=(2,), chat=False).prompt_ids(tok, [p.prompt], ["\nA: "])
        assert tok.decode(plain[0], skip_special_tokens=True) == p.prompt
    finally:
        tok.chat_template = None


def test_bigbench_preferred_metric_ponder_cannot_compute_is_one_line(tmp_path, tiny):
    data = json.loads(ADDITION.read_text())
    data.update(metrics=["bleu", "exact_str_match"], preferred_score="bleu")
    path = tmp_path / "task.json"
    path.write_text(json.dumps(data))
    from ponder.errors import TaskError

    with pytest.raises(TaskError, match="preferred_score 'bleu' is not computed"):
        evaluate(*tiny, BigBenchTask(path), n=2, split="all", modes=("no_think",))


def test_option_scores_are_batch_invariant(tiny):
    model, tok = tiny
    task = get_task(str(DISAMBIGUATION))
    one = evaluate(model, tok, task, n=3, split="all", modes=("no_think",), batch_size=1).modes["no_think"]
    all_ = evaluate(model, tok, task, n=3, split="all", modes=("no_think",), batch_size=8).modes["no_think"]
    for a, b in zip(one.examples, all_.examples):
        assert torch.allclose(
            torch.tensor(list(a["option_log_probs"].values())),
            torch.tensor(list(b["option_log_probs"].values())),
            atol=1e-4,
        )


def test_score_options_reads_each_context_once_and_equals_score_pairs(tiny):
    from ponder.lm.score import score_options

    model, tok = tiny
    contexts = [tok("12+34=")["input_ids"], tok("7")["input_ids"], tok("a longer context, 5+5=")["input_ids"]]
    options = [["46", "4"], ["x"], ["10", "1 0 0", "ten"]]
    got = score_options(model, tok, contexts, options, batch_size=2)
    flat_ctx = [c for c, opts in zip(contexts, options) for _ in opts]
    want = score_pairs(model, tok, flat_ctx, [o for opts in options for o in opts]).sum
    assert [len(g) for g in got] == [2, 1, 3]
    assert torch.cat(got).tolist() == pytest.approx(want.tolist(), abs=1e-4)
