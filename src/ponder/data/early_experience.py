"""Early experience (Zhang et al. 2025, *Agent Learning via Early Experience*): the data side.

A worked scratchpad is a trajectory: each thought step is an action, taken in the state made
of the prompt and the steps before it, and the final answer is the last action. An
environment answers each action with an observation (here a checker that recomputes the
step). From the policy's *own* actions at the expert's states and the observations they lead
to, with no reward, two kinds of training example are built:

* implicit world modelling (:func:`world_model_example`): given the state and the own action,
  predict the observation, i.e. the next state's new part;
* self-reflection (:func:`reflection_example`): given the state, a rationale for why the
  expert's action beats the own one, then the expert's action. Here the environment writes the
  rationale by a rule from what its observation of the own action found wrong
  (``StepEnvironment.rationale``; the paper has an LLM write it, which a 2M-parameter model
  cannot). It states the facts the own action got wrong, not the own action itself: a tiny model
  trained on rationales that quote the wrong step learns to write wrong steps in its thoughts and
  derails (measured: ``bench/RESULTS.md``);

next to the imitation examples of the expert trajectories themselves (:func:`expert_example`).
Every example is an :class:`Example`: a context and a target, the loss falling on the target.

:class:`AdditionSteps` is the environment of the addition tasks (``add3-5`` ...): the steps
``x+y+c=ss`` of :class:`~ponder.data.synthetic.Addition`, and a verifier for the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ponder.data.synthetic import Addition
from ponder.data.task import Problem, Task, normalize_answer
from ponder.errors import PonderError
from ponder.lm.delimiters import THINK_OPEN, wrap_thought

_STEP = re.compile(r"(\d)\+(\d)\+(\d)=(\d\d?)")


class EarlyExperienceError(PonderError, ValueError):
    """A task without a step environment, or problems without the expert thought it needs."""


class Example(NamedTuple):
    """A training example: ``context`` conditions, the loss falls on ``target``; ``eos`` ends the
    document after the target (only where the target finishes a trajectory)."""

    context: str
    target: str
    eos: bool = False


@dataclass(frozen=True)
class State:
    """An expert state of a problem: the text the policy continues and the expert's action there.

    ``index``: the step (0-based); ``final``: the action is the answer (the thought is closed).
    """

    problem: Problem
    index: int
    context: str
    expert: str
    final: bool


class StepEnvironment(Protocol):
    """Cuts an expert trajectory into states and answers an action taken in one of them."""

    def states(self, problem: Problem) -> list[State]: ...

    def read_action(self, state: State, text: str) -> str:
        """The action a sampled continuation ``text`` of ``state.context`` takes (the environment parses it)."""
        ...

    def respond(self, state: State, action: str) -> str:
        """The observation that follows ``action`` in ``state`` (``ok`` / ``correct`` when it is right)."""
        ...

    def rationale(self, state: State, action: str, observation: str) -> str:
        """Why the expert's action beats the wrong ``action`` in ``state``, from its ``observation``."""
        ...


class AdditionSteps:
    """The addition scratchpad as an environment.

    States: ``prompt<think>`` + the first ``k`` steps (each followed by a space), expert action
    step ``k``; then ``prompt<think>thought</think>``, expert action the answer. A sampled step
    is read as its leading ``x+y+c=s`` (``s`` of one or two digits; what follows on the line is
    ignored, as a tool reads the first call in a message), or kept whole when it does not start
    with one (and is then ``unreadable``); an answer is its line, stripped. Observations
    of a step ``x+y+c=s``: ``ok`` when it is the expert's, else what is wrong with it, from
    ``column k is X+Y`` (the digits of this column), ``carry C`` (the carry in) and
    ``x+y+c=SS`` (the true two-digit sum of what was written), joined by ``; ``; ``unreadable``
    when it is not a step. Observation of an answer: ``correct`` or ``wrong`` (a verifier).

    Rationale against a wrong step: ``[column k is X+Y; carry C]`` with the parts the step got
    wrong (both when it was unreadable), or ``[sum SS]`` when only its sum was wrong.
    """

    def states(self, problem: Problem) -> list[State]:
        if problem.thought is None:
            raise EarlyExperienceError(f"problem {problem.prompt!r} has no worked thought to take states from")
        steps = problem.thought.split(" ")
        head = problem.prompt + THINK_OPEN
        out = [
            State(problem, k, head + "".join(s + " " for s in steps[:k]), steps[k], False) for k in range(len(steps))
        ]
        out.append(State(problem, len(steps), problem.prompt + wrap_thought(problem.thought), problem.answer, True))
        return out

    def read_action(self, state: State, text: str) -> str:
        text = text.strip()
        step = None if state.final else _STEP.match(text)
        return step.group(0) if step else text

    def respond(self, state: State, action: str) -> str:
        action = action.strip()
        if state.final:
            return "correct" if normalize_answer(action) == normalize_answer(state.expert) else "wrong"
        if action == state.expert:
            return "ok"
        got, want = _STEP.fullmatch(action), _STEP.fullmatch(state.expert)
        if got is None or want is None:
            return "unreadable"
        x, y, c = (int(v) for v in got.groups()[:3])
        written = got.group(4)
        tx, ty, tc = (int(v) for v in want.groups()[:3])
        issues = []
        if (x, y) != (tx, ty):
            issues.append(f"column {state.index + 1} is {tx}+{ty}")
        if c != tc:
            issues.append(f"carry {tc}")
        if written != f"{x + y + c:02d}":  # the sum is written with two digits, the first the next carry
            issues.append(f"{x}+{y}+{c}={x + y + c:02d}")
        return "; ".join(issues)

    def rationale(self, state: State, action: str, observation: str) -> str:
        tx, ty, tc, ts = _STEP.fullmatch(state.expert).groups()
        got = _STEP.fullmatch(action.strip())
        x, y, c = got.groups()[:3] if got else (None, None, None)
        facts = []
        if (x, y) != (tx, ty):
            facts.append(f"column {state.index + 1} is {tx}+{ty}")
        if c != tc:
            facts.append(f"carry {tc}")
        return "[" + ("; ".join(facts) or f"sum {ts}") + "]"


def step_environment(task: Task) -> StepEnvironment:
    """The step environment of ``task`` (addition tasks); an error naming the supported tasks otherwise."""
    if isinstance(task, Addition):
        return AdditionSteps()
    raise EarlyExperienceError(
        f"early experience needs a step environment for task {task.name!r}; one exists for the addition tasks "
        "(addN, addM-N); add a StepEnvironment in ponder.data.early_experience for others."
    )


def expert_example(problem: Problem) -> Example:
    """Imitation: the prompt, then the whole expert trajectory (thought and answer) as the target."""
    if problem.thought is None:
        raise EarlyExperienceError(f"problem {problem.prompt!r} has no worked thought to imitate")
    return Example(problem.prompt, wrap_thought(problem.thought) + problem.answer, eos=True)


def world_model_example(state: State, action: str, observation: str) -> Example:
    """Implicit world modelling: ``state + action`` -> `` [observation]``."""
    return Example(state.context + action.strip(), f" [{observation}]")


def reflection_example(env: StepEnvironment, state: State, action: str, observation: str) -> Example | None:
    """Self-reflection: ``state`` -> the environment's rationale against ``action``, then the expert's step.

    None when there is nothing to reflect on: the own action was right, or the state is the
    answer (a rationale there would sit in the answer line, outside the thought).
    """
    if state.final or is_right(observation):
        return None
    return Example(state.context, f"{env.rationale(state, action, observation)} {state.expert}")


def is_right(observation: str) -> bool:
    """Whether an observation says the action was the expert's (a step) or the right answer."""
    return observation in ("ok", "correct")
