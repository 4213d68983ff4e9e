"""GRPO / TTRL runs that train nothing say so, write no model and exit 3; the default evaluation is sized to the run."""

import json

import pytest
import torch

from ponder.data.synthetic import Addition
from ponder.jobs.grpo import (
    EVAL_N_CAP,
    TRAINED_NOTHING_EXIT,
    GRPOJob,
    default_eval_n,
    run_grpo,
    untrained_steps_message,
)
from ponder.rl.grpo import GRPOTrainer
from test_grpo import _cfg  # the small GRPO settings of the trainer-step tests

# A random tiny model cannot write add5's 5-6 digit sum in 3 answer tokens: every pass rate is 0.
SMALL_RUN = [
    "--task",
    "add5",
    "--steps",
    "2",
    "--prompts-per-step",
    "2",
    "--group-size",
    "2",
    "--pool-size",
    "4",
    "--max-thought-tokens",
    "4",
    "--max-answer-tokens",
    "3",
    "--quiet",
]


@pytest.fixture
def random_tiny_dir(random_tiny, tmp_path):
    """The random-init tiny model as an HF folder (what ``--model DIR`` loads)."""
    model, tok = random_tiny
    path = tmp_path / "random-tiny"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "command, extra, set_aside",
    [
        # Every prompt has pass rate 0 under the verifiable reward: all set aside as too hard.
        ("grpo", [], "groups_hard_set_aside"),
        # The length reward is 0 for every thought within its target (the budget): all groups equal.
        ("ttrl", ["--reward", "length"], "groups_equal_filtered"),
    ],
)
def test_run_that_trains_nothing_says_so_writes_no_model_and_exits_3(
    command, extra, set_aside, random_tiny_dir, tmp_path, capsys, one_thread
):
    from ponder.cli import main

    out = tmp_path / "run"
    code = main([command, "--model", str(random_tiny_dir), *SMALL_RUN, *extra, "--out", str(out)])
    err = capsys.readouterr().err.replace("\n", " ")
    assert code == TRAINED_NOTHING_EXIT == 3
    assert "the run trained nothing" in err and "no final model" in err
    assert not (out / "final").exists() and not (out / "checkpoints").exists()  # no copy of the input model
    summary = json.loads((out / f"{command}_summary.json").read_text())
    assert summary["trained_nothing"] is True and summary["steps_trained"] == 0
    assert summary["skipped_no_work"] == 2 and summary[set_aside] == 4 and summary["groups_trained"] == 0
    # Weights untouched, so the "after" figures are the "before" ones, over the default-sized evaluation.
    assert summary["think_accuracy_after"] == summary["think_accuracy_before"] == 0.0
    assert summary["eval_n"] == default_eval_n(2, 2) == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [1, 1] and [r["steps_trained_total"] for r in rows] == [0, 0]


def test_steps_that_train_nothing_are_counted_and_only_trained_weights_are_saved(
    random_tiny, tmp_path, monkeypatch, one_thread
):
    from ponder.rewards import REWARDS

    calls = []

    def first_step_flat(prompts, completions, group_ids, **_):
        calls.append(1)  # step 1: one reward for all (no signal); step 2: varied
        return torch.ones(len(completions)) if len(calls) == 1 else torch.arange(len(completions)).float()

    monkeypatch.setitem(REWARDS, "first_step_flat", first_step_flat)
    model, tok = random_tiny
    cfg = _cfg(steps=2, save_every=1, reward="first_step_flat", no_answer_reward=1.0)
    trainer = GRPOTrainer(model, tok, Addition(2), cfg, tmp_path)
    trainer.train_step()
    assert trainer.trained_nothing and trainer.save() is None  # the input model's weights: not copied
    summary = trainer.train()
    assert summary["trained_nothing"] is False and summary["steps_trained"] == 1 and summary["skipped_no_work"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000002"]
    assert (tmp_path / "final").is_dir()
    message = untrained_steps_message(summary)
    assert message.startswith("1 of 2 steps trained nothing") and "2 set aside as equal-reward" in message
    assert untrained_steps_message({**summary, "steps_trained": 2}) is None


def test_untrained_message_names_the_cause_and_the_remedy():
    summary = {"steps": 3, "steps_trained": 0, "groups_trained": 0, "groups_equal_filtered": 0}
    hard = untrained_steps_message({**summary, "groups_hard_set_aside": 6})
    assert "none of its 3 steps" in hard and "6 as too hard" in hard and "solves some problems" in hard
    assert "varies within a group" not in hard
    equal = untrained_steps_message({**summary, "groups_equal_filtered": 6, "groups_hard_set_aside": 0})
    assert "6 set aside as equal-reward" in equal and "varies within a group" in equal
    assert "solves some problems" not in equal
    nonfinite = untrained_steps_message({**summary, "skipped_nonfinite": 3})
    assert "3 updates skipped as non-finite" in nonfinite


def test_default_evaluation_is_sized_to_the_run():
    assert default_eval_n(2, 16) == 32  # a 2-step smoke run: 32 problems, not 200
    assert default_eval_n(1, 1) == 1
    assert default_eval_n(40, 16) == EVAL_N_CAP == 200  # the default run: capped
    assert default_eval_n(13, 16) == 200 and default_eval_n(12, 16) == 192


def test_help_states_the_default_evaluation_rule_and_the_exit_status():
    from ponder.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in ("grpo", "ttrl"):
        text = " ".join(sub[command].format_help().split())
        assert "default min(200, steps x prompts-per-step)" in text
        assert f"exits {TRAINED_NOTHING_EXIT}" in text


def _record_evaluations(monkeypatch, record) -> None:
    """Replace held_out_think_accuracy's evaluate by one that calls ``record(task, n)`` and scores 0 (no sampling)."""
    import ponder.eval.accuracy as accuracy

    def fake_evaluate(model, tokenizer, task, n, seed, modes, max_thought_tokens, think_settings):
        record(task, n)
        mode = type("Mode", (), {"accuracy": 0.0, "mean_thought_tokens": 0.0})()
        return type("Result", (), {"modes": {"think": mode}})()

    monkeypatch.setattr(accuracy, "evaluate", fake_evaluate)


def test_job_measures_the_default_sized_evaluation(random_tiny_dir, tmp_path, monkeypatch, one_thread):
    sizes = []
    _record_evaluations(monkeypatch, lambda task, n: sizes.append(n))
    common = dict(model=str(random_tiny_dir), task="add2", steps=1, prompts_per_step=3, group_size=2, pool_size=4)
    common.update(max_thought_tokens=4, max_answer_tokens=3, reward="verifiable=1,format=0.1")
    summary = run_grpo(GRPOJob(**common, out=str(tmp_path / "a")), progress=False)
    assert summary["eval_n"] == 3 and sizes[0] == 3  # 1 step x 3 prompts
    sizes.clear()
    run_grpo(GRPOJob(**common, eval_n=5, out=str(tmp_path / "b")), progress=False)
    assert sizes[0] == 5  # an explicit --eval-n wins


def test_the_jobs_answer_rule_reads_the_rewards_answers(random_tiny_dir, tmp_path, monkeypatch, one_thread):
    # A chat model answers "5 + 9 = 14.": the task's first_line rule reads that whole line, so the verifiable reward
    # is 0 on every completion; --answer-rule last_number makes the reward read answers as the evaluation does.
    rules, scored = [], []
    real_score = Addition.score

    def spy_score(self, problem, completion):
        scored.append(self.answer_rule)
        return real_score(self, problem, completion)

    _record_evaluations(monkeypatch, lambda task, n: rules.append(task.answer_rule))
    monkeypatch.setattr(Addition, "score", spy_score)
    common = dict(model=str(random_tiny_dir), task="add2", steps=1, prompts_per_step=2, group_size=2, pool_size=4)
    common.update(max_thought_tokens=4, max_answer_tokens=3, eval_n=2, answer_rule="last_number")
    run_grpo(GRPOJob(**common, out=str(tmp_path / "a")), progress=False)
    assert rules and set(rules) == {"last_number"}  # the held-out measurement
    assert scored and set(scored) == {"last_number"}  # the trainer's verifiable reward and pass rates
