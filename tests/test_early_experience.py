"""Early experience: the environment and the example builders against hand-made cases, target-only
collation, the recipe streams, and collection / training / the job on small models."""

from __future__ import annotations

import json

import pytest
import torch

from ponder.data.early_experience import (
    AdditionSteps,
    EarlyExperienceError,
    Example,
    expert_example,
    reflection_example,
    step_environment,
    world_model_example,
)
from ponder.data.registry import get_task
from ponder.data.synthetic import Addition, ListSort
from ponder.errors import PonderError
from ponder.methods.early_experience import (
    ExperienceData,
    Transition,
    build_examples,
    collect_experience,
    recipe_stream,
    target_tokens,
    train_recipe,
)
from ponder.train.next_token import NextTokenConfig, collate_windows, training_windows

PROBLEM = Addition(4).make(1234, 5678)  # steps 4+8+0=12 3+7+1=11 2+6+1=09 1+5+0=06, answer 6912


def test_states_of_an_addition_trajectory():
    states = AdditionSteps().states(PROBLEM)
    assert [s.context for s in states] == [
        "1234+5678=<think>",
        "1234+5678=<think>4+8+0=12 ",
        "1234+5678=<think>4+8+0=12 3+7+1=11 ",
        "1234+5678=<think>4+8+0=12 3+7+1=11 2+6+1=09 ",
        "1234+5678=<think>4+8+0=12 3+7+1=11 2+6+1=09 1+5+0=06</think>",
    ]
    assert [s.expert for s in states] == ["4+8+0=12", "3+7+1=11", "2+6+1=09", "1+5+0=06", "6912"]
    assert [s.final for s in states] == [False] * 4 + [True]
    assert [s.index for s in states] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("index", "action", "observation"),
    [
        (1, "3+7+1=11", "ok"),
        (1, "3+7+0=10", "carry 1"),  # right column, wrong carry, its own sum right
        (1, "3+7+0=11", "carry 1; 3+7+0=10"),
        (1, "3+7+1=10", "3+7+1=11"),
        (1, "2+6+1=09", "column 2 is 3+7"),
        (1, "4+8+0=12", "column 2 is 3+7; carry 1"),
        (1, "3+7+1=1", "3+7+1=11"),
        (2, "2+6+1=9", "2+6+1=09"),  # a different spelling of the sum is not the expert's
        (0, "4+8<0=12", "unreadable"),
        (4, "6912", "correct"),
        (4, " 6912 ", "correct"),
        (4, "6913", "wrong"),
    ],
)
def test_observations_by_hand(index, action, observation):
    env = AdditionSteps()
    assert env.respond(env.states(PROBLEM)[index], action) == observation


def test_the_environment_reads_the_leading_step():
    env = AdditionSteps()
    step, final = env.states(PROBLEM)[3], env.states(PROBLEM)[4]
    assert env.read_action(step, "1+5+0=06v047") == "1+5+0=06"  # what follows on the line is ignored
    assert env.read_action(step, " 1+5+0=6") == "1+5+0=6"
    assert env.read_action(step, "1+5<0=06") == "1+5<0=06"  # not a step: kept whole, unreadable
    assert env.read_action(final, " 69 12 ") == "69 12"


def test_example_builders_by_hand():
    env = AdditionSteps()
    state = env.states(PROBLEM)[1]
    assert expert_example(PROBLEM) == Example(
        "1234+5678=", "<think>4+8+0=12 3+7+1=11 2+6+1=09 1+5+0=06</think>6912", True
    )
    assert world_model_example(state, "3+7+0=10", "carry 1") == Example(
        "1234+5678=<think>4+8+0=12 3+7+0=10", " [carry 1]", False
    )
    assert reflection_example(env, state, "3+7+0=10", "carry 1") == Example(
        "1234+5678=<think>4+8+0=12 ", "[carry 1] 3+7+1=11", False
    )
    assert reflection_example(env, state, "3+7+1=11", "ok") is None  # nothing to reflect on
    assert reflection_example(env, env.states(PROBLEM)[4], "6913", "wrong") is None  # no rationale in the answer


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("3+7+0=10", "[carry 1]"),
        ("2+6+1=09", "[column 2 is 3+7]"),
        ("4+8+0=12", "[column 2 is 3+7; carry 1]"),
        ("3+7+1=10", "[sum 11]"),  # only the sum was wrong
        ("3+7<1=11", "[column 2 is 3+7; carry 1]"),  # unreadable: what a step here must use
    ],
)
def test_rationales_state_the_facts_not_the_wrong_step(action, reason):
    env = AdditionSteps()
    state = env.states(PROBLEM)[1]
    assert env.rationale(state, action, env.respond(state, action)) == reason


def test_only_addition_tasks_have_a_step_environment():
    assert isinstance(step_environment(get_task("add3-5")), AdditionSteps)
    with pytest.raises(EarlyExperienceError, match="step environment"):
        step_environment(ListSort())
    with pytest.raises(EarlyExperienceError, match="no worked thought"):
        AdditionSteps().states(PROBLEM.__class__(prompt="1+1=", answer="2"))


def test_collate_trains_the_target_only(char_tokenizer):
    tok = char_tokenizer
    docs = [Example("12+", "3=", False), Example("1+", "2", True), "ab"]
    windows = list(training_windows(tok, iter(docs), max_length=16))
    assert [start for _, start in windows] == [4, 3, 0]  # after <bos> and the context; a text trains whole
    ids, mask, labels = collate_windows([w for w, _ in windows], tok.pad_token_id, "cpu", [s for _, s in windows])
    # row 0: <bos> 1 2 + 3 = -> the loss on "3=" only, no EOS
    assert mask[0].sum() == 6 and labels[0, :4].tolist() == [-100] * 4
    assert tok.decode(labels[0, 4:6]) == "3="
    # row 1: <bos> 1 + 2 <eos>
    assert labels[1, :3].tolist() == [-100] * 3 and labels[1, 4].item() == tok.eos_token_id
    assert labels[1, 5:].tolist() == [-100] * 1
    # a plain string is trained whole, as before
    assert labels[2, :4].tolist() == ids[2, :4].tolist() and ids[2, 3].item() == tok.eos_token_id
    assert target_tokens(tok, [Example("12+", "3=", False), Example("1+", "2", True)]) == 4
    with pytest.raises(PonderError, match="no room for its target"):
        next(training_windows(tok, iter([Example("1234", "5")]), max_length=5))


def _data(n_expert=4):
    expert = [Example(f"e{i}", "x", True) for i in range(n_expert)]
    world = [Example(f"w{i}", "y") for i in range(6)]
    reflection = [Example(f"r{i}", "z") for i in range(5)]
    return ExperienceData(expert, world, reflection)


def test_recipe_streams():
    data = _data()
    take = lambda it, n: [next(it) for _ in range(n)]  # noqa: E731
    imitation = take(recipe_stream(data, "imitation", 10, seed=1), 12)
    assert all(e in data.expert for e in imitation) and set(imitation[:4]) == set(data.expert)  # epochs
    first = take(recipe_stream(data, "world_model_first", 10, world_model_share=0.3), 10)
    assert all(e in data.world_model for e in first[:3]) and all(e in data.expert for e in first[3:])
    world = take(recipe_stream(data, "world_model", 4000, world_model_share=0.3, seed=3), 4000)
    assert sum(e in data.world_model for e in world) / len(world) == pytest.approx(0.3, abs=0.03)
    assert all(e in data.world_model or e in data.expert for e in world)
    mixed = take(recipe_stream(data, "reflection", 4000, reflection_share=0.25, seed=2), 4000)
    share = sum(e in data.reflection for e in mixed) / len(mixed)
    assert share == pytest.approx(0.25, abs=0.03)
    again = recipe_stream(data, "reflection", 50, reflection_share=0.25, seed=2)
    assert take(again, 50) == mixed[:50]  # deterministic
    with pytest.raises(ValueError, match="unknown recipe"):
        next(recipe_stream(data, "dagger", 10))


def test_build_examples_counts():
    env = AdditionSteps()
    states = env.states(PROBLEM)
    transitions = [
        Transition(states[0], "4+8+0=12", "ok"),
        Transition(states[1], "3+7+0=10", "carry 1"),
        Transition(states[1], "3+7+1=11", "ok"),
        Transition(states[4], "6912", "correct"),
        Transition(states[4], "6913", "wrong"),
    ]
    data = build_examples(env, [PROBLEM], transitions)
    assert len(data.expert) == 1 and len(data.world_model) == 5 and len(data.reflection) == 1
    assert data.stats["own_steps_right"] == pytest.approx(2 / 3)
    assert data.stats["own_answers_right"] == pytest.approx(0.5)


def test_collect_and_train_on_a_small_model(random_tiny, tmp_path, one_thread):
    model, tok = random_tiny
    problems = Addition(2).problems(2, seed=0)
    env = AdditionSteps()
    transitions = collect_experience(model, tok, env, problems, samples_per_state=2, seed=0, max_step_tokens=8)
    n_states = sum(len(env.states(p)) for p in problems)
    assert len(transitions) == 2 * n_states
    for t in transitions:
        assert t.observation == env.respond(t.state, t.action)
    again = collect_experience(model, tok, env, problems, samples_per_state=2, seed=0, max_step_tokens=8)
    assert [t.action for t in again] == [t.action for t in transitions]
    data = build_examples(env, problems, transitions)
    cfg = NextTokenConfig(steps=2, batch_size=4, lr=1e-3, warmup_steps=0, save_every=100, max_length=64)
    before = [p.detach().clone() for p in model.parameters()]
    run = tmp_path / "run"
    summary = train_recipe(model, tok, data, "world_model_first", cfg, run, world_model_share=0.5, progress=False)
    assert summary["examples_by_kind"] == {"expert": 4, "world_model": 4, "reflection": 0}
    used = [e for _, e in zip(range(8), recipe_stream(data, "world_model_first", 8, world_model_share=0.5))]
    assert summary["target_tokens"] == target_tokens(tok, used)
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_job_end_to_end(trained_tiny_dir, tmp_path, one_thread):
    from ponder.cli import main

    out = tmp_path / "ee"
    argv = ["early-experience", "--model", str(trained_tiny_dir), "--task", "add2", "--experts", "3"]
    argv += ["--recipes", "imitation,reflection", "--train.steps", "2", "--train.batch-size", "4", "--grpo-steps", "1"]
    argv += ["--grpo-prompts", "2", "--grpo-group", "2", "--eval-n", "4", "--world-model-probe", "2", "--seeds", "0"]
    argv += ["--out", str(out), "--quiet"]
    assert main(argv) == 0
    payload = json.loads((out / "early_experience.json").read_text())
    assert [r["recipe"] for r in payload["runs"]] == ["imitation", "reflection"]
    for r in payload["runs"]:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["accuracy_after_grpo"] <= 1
        assert sum(r["examples_by_kind"].values()) == 8
        assert 0 <= r["world_model_accuracy"] <= 1
    assert 0 <= payload["collection"][0]["base_world_model_accuracy"] <= 1
    assert main(["early-experience", "--task", "sort", "--out", str(out), "--quiet"]) == 2


def test_world_model_accuracy_compares_greedy_observations(monkeypatch, random_tiny):
    import ponder.methods.early_experience as ee

    env = AdditionSteps()
    states = env.states(PROBLEM)
    transitions = [Transition(states[1], "3+7+0=10", "carry 1"), Transition(states[4], "6913", "wrong")]
    seen = {}

    def fake_sample(model, tokenizer, contexts, n, stop, max_tokens, temperature, generator, batch_size=None):
        seen.update(contexts=list(contexts), stop=stop, temperature=temperature)
        return [["carry 1"], ["correct"]]

    monkeypatch.setattr(ee, "sample_actions", fake_sample)
    model, tok = random_tiny
    assert ee.world_model_accuracy(model, tok, transitions) == 0.5
    assert seen["contexts"][0] == "1234+5678=<think>4+8+0=12 3+7+0=10 ["
    assert seen["stop"] == "]" and seen["temperature"] == 0.0
