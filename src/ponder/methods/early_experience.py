"""Early experience: collect the policy's own actions at expert states, build the examples, train.

:func:`collect_experience` branches the policy at every state of the expert trajectories
(:class:`~ponder.data.early_experience.State`): it samples ``k`` own actions per state and
asks the environment what each leads to. :func:`build_examples` turns the expert trajectories
and these transitions into the three example pools (imitation, world modelling, reflection),
and :func:`train_recipe` trains on one recipe with next-token training whose loss falls on
the targets only (:func:`~ponder.train.next_token.train_next_token`):

* ``imitation``: the expert trajectories only;
* ``world_model``: each example a world-modelling one with probability ``world_model_share``,
  else an expert trajectory;
* ``world_model_first``: the paper's two stages in one run and one schedule: world-modelling
  examples for the first ``world_model_share`` of the steps, then expert trajectories. On the
  tiny model the first stage wrecks the policy (the observations are text it never writes, and
  Adam moves every weight at the full learning rate towards them), which is why ``world_model``
  interleaves (measured: ``bench/RESULTS.md``);
* ``reflection``: each example a reflection one with probability ``reflection_share``, else an
  expert trajectory.

Every recipe trains the same number of steps on the same number of examples per step, from
the same expert problems: only what the non-expert examples are differs. No reward is used.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ponder.data.early_experience import (
    Example,
    State,
    StepEnvironment,
    expert_example,
    is_right,
    reflection_example,
    world_model_example,
)
from ponder.data.task import Problem
from ponder.lm.thinking import ThoughtFormat, think_then_answer
from ponder.train.next_token import NextTokenConfig, train_next_token

Recipe = Literal["imitation", "world_model", "world_model_first", "reflection"]
RECIPES: tuple[str, ...] = ("imitation", "world_model", "world_model_first", "reflection")


@dataclass(frozen=True)
class Transition:
    """An own action taken in an expert state and the environment's observation after it."""

    state: State
    action: str
    observation: str


def sample_actions(
    model,
    tokenizer,
    contexts: Sequence[str],
    n: int,
    stop: str,
    max_tokens: int,
    temperature: float,
    generator: torch.Generator | None,
    batch_size: int | None = None,
) -> list[list[str]]:
    """``n`` continuations of each context up to ``stop`` (excluded); thought delimiters banned.

    The contexts are tokenized as the training examples' contexts are (:func:`~ponder.train.next_token.example_window`)
    and sampled from those ids with the one sampler (:func:`~ponder.lm.thinking.think_then_answer`,
    no-think: an action is written like an answer); the sampled ids are decoded only for the
    environment to read the action. ``batch_size`` bounds the rows decoded together. The only call
    into the sampler here, so that a change of sampler API touches one place.
    """
    fmt = ThoughtFormat.of(model, tokenizer)
    context_ids = tokenizer(list(contexts), add_special_tokens=True)["input_ids"]
    out = think_then_answer(
        model,
        tokenizer,
        fmt,
        context_ids,
        n=n,
        think=False,
        max_answer_tokens=max_tokens,
        temperature=temperature,
        stops=(stop,),
        generator=generator,
        batch_size=None if batch_size is None else max(1, batch_size // n),
    )
    texts = out.texts(tokenizer, (stop,))
    return [texts[i * n : (i + 1) * n] for i in range(len(contexts))]


def collect_experience(
    model,
    tokenizer,
    env: StepEnvironment,
    problems: Sequence[Problem],
    samples_per_state: int = 2,
    temperature: float = 1.0,
    seed: int = 0,
    max_step_tokens: int = 16,
    max_answer_tokens: int = 16,
    batch_size: int | None = 256,
) -> list[Transition]:
    """``samples_per_state`` own actions at every expert state of ``problems``, with their observations.

    Thought steps are sampled up to the next space, answers up to the end of the line, and the
    environment reads the action from the sampled text (``env.read_action``).
    """
    states = [s for p in problems for s in env.states(p)]
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    transitions = []
    for final, stop, budget in ((False, " ", max_step_tokens), (True, "\n", max_answer_tokens)):
        group = [s for s in states if s.final == final]
        if not group:
            continue
        actions = sample_actions(
            model,
            tokenizer,
            [s.context for s in group],
            samples_per_state,
            stop,
            budget,
            temperature,
            generator,
            batch_size,
        )
        for state, own in zip(group, actions):
            for text in own:
                action = env.read_action(state, text)
                transitions.append(Transition(state, action, env.respond(state, action)))
    return transitions


def world_model_accuracy(model, tokenizer, transitions: Sequence[Transition], batch_size: int | None = 256) -> float:
    """Share of ``transitions`` whose observation the model predicts exactly (greedy) from the
    state and the action, in the world-modelling examples' format: how well it learnt the dynamics."""
    if not transitions:
        return float("nan")
    contexts = [world_model_example(t.state, t.action, t.observation).context + " [" for t in transitions]
    predicted = sample_actions(model, tokenizer, contexts, 1, "]", 48, 0.0, None, batch_size)
    return sum(p[0].strip() == t.observation for p, t in zip(predicted, transitions)) / len(transitions)


@dataclass
class ExperienceData:
    """The example pools and what the collection saw.

    ``stats``: ``expert_problems``, ``own_actions``, ``own_steps_right`` and ``own_answers_right``
    (shares of own steps and answers the environment calls right), ``world_model_examples``,
    ``reflection_examples``.
    """

    expert: list[Example]
    world_model: list[Example]
    reflection: list[Example]
    stats: dict = field(default_factory=dict)


def build_examples(
    env: StepEnvironment, problems: Sequence[Problem], transitions: Sequence[Transition]
) -> ExperienceData:
    """Expert trajectories, one world-modelling example per transition, one reflection example
    per wrong own step (see :mod:`ponder.data.early_experience`)."""
    world = [world_model_example(t.state, t.action, t.observation) for t in transitions]
    reflection = [
        r for t in transitions if (r := reflection_example(env, t.state, t.action, t.observation)) is not None
    ]
    steps = [t for t in transitions if not t.state.final]
    answers = [t for t in transitions if t.state.final]
    stats = {
        "expert_problems": len(problems),
        "own_actions": len(transitions),
        "own_steps_right": sum(is_right(t.observation) for t in steps) / max(1, len(steps)),
        "own_answers_right": sum(is_right(t.observation) for t in answers) / max(1, len(answers)),
        "world_model_examples": len(world),
        "reflection_examples": len(reflection),
    }
    return ExperienceData([expert_example(p) for p in problems], world, reflection, stats)


def _shuffled_forever(pool: Sequence[Example], rng: random.Random) -> Iterator[Example]:
    while True:
        order = list(pool)
        rng.shuffle(order)
        yield from order


def recipe_stream(
    data: ExperienceData,
    recipe: Recipe,
    total_examples: int,
    world_model_share: float = 0.5,
    reflection_share: float = 0.5,
    seed: int = 0,
) -> Iterator[Example]:
    """The examples of ``recipe`` in training order (endless; deterministic in ``seed``).

    ``world_model`` and ``reflection``: each example is one of that kind with probability
    ``world_model_share`` / ``reflection_share``, else an expert trajectory.
    ``world_model_first``: the first ``round(world_model_share * total_examples)`` are
    world-modelling examples, the rest expert trajectories. Pools are visited in reshuffled epochs.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    rng = random.Random(f"early-experience:{recipe}:{seed}")
    expert = _shuffled_forever(data.expert, rng)
    if recipe == "imitation":
        yield from expert
        return
    if recipe == "world_model_first":
        yield from itertools.islice(
            _shuffled_forever(data.world_model or data.expert, rng), round(world_model_share * total_examples)
        )
        yield from expert
        return
    pool, share = (
        (data.world_model, world_model_share) if recipe == "world_model" else (data.reflection, reflection_share)
    )
    other = _shuffled_forever(pool or data.expert, rng)
    while True:
        yield next(other) if rng.random() < share else next(expert)


def target_tokens(tokenizer, examples: Sequence[Example]) -> int:
    """Tokens the loss falls on in ``examples`` (targets, plus EOS where it ends one)."""
    ids = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    return sum(len(t) for t in ids) + sum(e.eos for e in examples)


def train_recipe(
    model,
    tokenizer,
    data: ExperienceData,
    recipe: Recipe,
    cfg: NextTokenConfig,
    run_dir: str | Path,
    world_model_share: float = 0.5,
    reflection_share: float = 0.5,
    progress: bool = True,
) -> dict:
    """Train ``model`` on ``recipe`` for ``cfg.steps`` steps of ``cfg.batch_size`` examples (loss on
    the targets); the final model goes to ``run_dir/final``. Returns the training summary plus
    ``target_tokens`` (tokens trained on) and ``examples_by_kind``."""
    total = cfg.steps * cfg.batch_size

    def stream() -> Iterator[Example]:
        return recipe_stream(data, recipe, total, world_model_share, reflection_share, cfg.seed)

    used = [e for _, e in zip(range(total), stream())]
    kinds = {"expert": set(data.expert), "world_model": set(data.world_model), "reflection": set(data.reflection)}
    summary = train_next_token(model, tokenizer, stream, cfg, run_dir, progress=progress, description=recipe)
    summary["target_tokens"] = target_tokens(tokenizer, used)
    summary["examples_by_kind"] = {k: sum(e in pool for e in used) for k, pool in kinds.items()}
    return summary
