"""Answer extraction rules a user can see and choose, and one thought format for every job that samples."""

from __future__ import annotations

import contextlib
import io

import pytest

from ponder.cli import build_parser, main
from ponder.data import answers, get_task
from ponder.data.task import describe_answer_rule, first_line_answer
from ponder.errors import ConfigError
from ponder.lm.thinking import ThinkSettings


def test_first_line_strips_leading_punctuation():
    assert first_line_answer(": 1009") == "1009"  # was ": 1009", scored wrong against 1009
    assert first_line_answer("<think>a</think>\n  = 42\nmore") == "42"
    assert first_line_answer("-5") == "-5"  # a sign is not punctuation
    assert first_line_answer("<think>open") is None


def test_each_rule_by_hand():
    assert answers.extract("last_number", "<think>3+4</think>so 12 + 7 = 1,019.") == "1019"
    assert answers.extract("last_number", "no digits") is None
    assert answers.extract("boxed", "x \\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert answers.extract("boxed", "\\boxed{unclosed") is None
    assert answers.extract("regex:answer is (\\d+)", "the answer is 17, not 18") == "17"
    assert answers.extract("regex:\\d+", "a 5 b 6") == "5"
    assert answers.extract("last_number", "<think>7") is None  # the thought never closed: no answer


def test_bad_rule_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown answer rule 'last'"):
        answers.check_rule("last")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        answers.check_rule("regex:(")


def test_the_rule_is_stated_and_can_be_chosen():
    task = get_task("add3")
    assert "first non-empty line" in describe_answer_rule(task)
    p = task.problems(1, split="test")[0]
    task.answer_rule = "last_number"
    assert task.score(p, f"the sum is {p.answer}") == 1.0 and "last number" in describe_answer_rule(task)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["tasks"]) == 0
    text = buf.getvalue()
    assert all(rule in text for rule in ("first_line", "last_number", "boxed", "regex:PATTERN", "output_regex"))


#: Every job that samples task prompts. Not here: rlp (thoughts after document prefixes, never a chat prompt),
#: audit (its job file is another branch's in issue 26), demo/base (the built-in tiny model, no chat template).
SAMPLING_JOBS = ("eval", "grpo", "ttrl", "plan", "early-experience", "audit")


def _help(job: str) -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[job].format_help()


def test_every_sampling_job_takes_the_same_thought_format_settings():
    flags = {f"--{name.replace('_', '-')}" for name in ThinkSettings.model_fields}
    assert flags >= {"--chat-template", "--think-instruction", "--min-thought-tokens"}
    for job in SAMPLING_JOBS:
        text = _help(job)
        missing = [f for f in flags | {"--max-thought-tokens"} if f not in text]
        assert not missing, f"ponder {job} --help lacks {missing}"
    descriptions = {
        job: [line.strip() for line in _help(job).splitlines() if "--think-instruction" in line]
        for job in SAMPLING_JOBS
    }
    assert len({tuple(v) for v in descriptions.values()}) == 1  # defined once: the same help everywhere


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--answer-rule", "last"], "unknown answer rule 'last'"),
        (["--split", "all"], "--split all is for BIG-bench task files"),
        (["--shots", "2"], "--shots is for BIG-bench task files with --split all"),
    ],
)
def test_bad_eval_settings_are_one_line_errors_before_any_work(flags, message, capsys):
    assert main(["eval", "--task", "add3", "--model", "/nonexistent-model", *flags]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err


@pytest.mark.parametrize("job", ["grpo", "ttrl"])
def test_a_bad_answer_rule_stops_rl_jobs_before_their_run_exists(job, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([job, "--task", "add3", "--answer-rule", "last", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown answer rule 'last'" in " ".join(err.split()) and "Traceback" not in err
    assert not out.exists()
