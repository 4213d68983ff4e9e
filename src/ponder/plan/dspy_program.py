"""A planning task as a DSPy program, optimised by DSPy's own optimizers on ponder's model and counters.

The program is one ``dspy.Predict`` over the signature ``question -> answer``, started from the
start chain's instruction lines (its demonstrations are the optimizer's to choose). Its validation set
is the planning environment's training inputs (the same ``n_train`` inputs every planner's evaluation
averages over) and its held-out set the environment's held-out inputs; its training set, where DSPy
draws and bootstraps demonstrations, is the problems the planners' demonstrations come from
(``ponder.plan.edits.mining_pool``, the evaluated inputs left out): neither side may score an input by
showing it solved (with ``valset=trainset`` a program with an input's own demonstration copies
its answer, which no held-out problem repays); the metric is the task's scorer
on the answer line, as in :class:`~ponder.plan.env.PlanEnv`. Every LM call of the optimizer (its
task runs, its bootstrapping rollouts and its instruction proposals alike) goes through
:class:`~ponder.plan.dspy_lm.PonderLM` into the environment's :class:`~ponder.plan.env.Counters`;
the held-out measurement of the program it returns is counted apart (``heldout_calls``), as the
planners' held-out curves are.

DSPy returns one program at the end of its run, so its curve has one point: the calls it used and
the held-out accuracy of what it returned.

Methods (:data:`DSPY_METHODS`): ``mipro`` (MIPROv2 with ``trials`` trials over ``candidates``
instruction and demonstration candidates; ``auto`` light/medium take DSPy's own budget instead) and
``bootstrap_rs`` (BootstrapFewShotWithRandomSearch over ``candidates`` programs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dspy

from ponder.plan.dspy_lm import ANSWER, QUESTION, PlainAdapter, PonderLM
from ponder.plan.edits import mining_pool
from ponder.plan.env import Counters, PlanEnv, PlanInputError

DSPY_METHODS = ("mipro", "bootstrap_rs")


@dataclass
class DSPySettings:
    """Budget knobs of the DSPy optimizers (the defaults come near 240 calls on 4 training inputs)."""

    trials: int = 12  # MIPROv2 trials (full evaluations of a proposed program on the training set)
    candidates: int = 6  # MIPROv2 instruction / demo-set candidates; random-search programs
    max_bootstrapped_demos: int = 2
    max_labeled_demos: int = 2
    demo_pool: int = 8  # training problems DSPy draws demonstrations from (the planners' ``Vocabulary.demos`` count)
    auto: str | None = None  # MIPROv2's own budget ("light", "medium") instead of trials/candidates
    proposal_tokens: int = 96  # cap on an instruction proposal's length (DSPy asks for thousands)
    answer_tokens: int = 12  # as PlanEnv.max_answer_tokens


def examples(problems) -> list:
    """``dspy.Example(question, answer)`` per problem, ``question`` the input."""
    return [dspy.Example({QUESTION: p.prompt, ANSWER: p.answer}).with_inputs(QUESTION) for p in problems]


def task_metric(task, problems):
    """DSPy metric: the task's score of the predicted answer line against the example's problem."""
    by_prompt = {p.prompt: p for p in problems}

    def metric(example, prediction, trace=None, *args, **kwargs) -> float:
        answer = getattr(prediction, ANSWER, None) if prediction is not None else None
        return float(task.score(by_prompt[example[QUESTION]], str(answer or "")))

    return metric


def program(instructions: tuple[str, ...] | list[str]) -> dspy.Module:
    """``dspy.Predict(question -> answer)`` whose instructions are ``instructions`` (one line each)."""
    text = "\n".join(instructions) or "Answer the question."
    return dspy.Predict(dspy.Signature(f"{QUESTION} -> {ANSWER}", text))


def accuracy(prog, task, problems, lm: PonderLM, answer_tokens: int = 12, chat_template: str = "off") -> float:
    """Share of ``problems`` ``prog`` answers right (a failed parse counts as wrong)."""
    metric = task_metric(task, problems)
    right = 0.0
    with dspy.context(lm=lm, adapter=PlainAdapter(answer_tokens, chat_template)):
        for ex in examples(problems):
            try:
                right += metric(ex, prog(**ex.inputs()))
            except (ValueError, dspy.utils.exceptions.AdapterParseError):
                continue
    return right / len(problems)


def optimize(method: str, env: PlanEnv, start_instructions, settings: DSPySettings, seed: int = 0):
    """Run DSPy optimizer ``method`` on ``env``'s task and training inputs; every call counted in ``env.counters``.

    Returns ``(program, summary)``: the compiled program and a summary in the shape of
    :meth:`ponder.plan.search.Search.summary` (``calls``, ``tokens``, ``generated_tokens``,
    ``best_heldout_accuracy``, ``best_train_accuracy``, ``curve`` of one point, ``best_chain``: the program's
    instructions and demonstrations).
    """
    if method not in DSPY_METHODS:
        raise ValueError(f"unknown DSPy method {method!r}; known: {DSPY_METHODS}")
    task_lm = PonderLM(env.lm, env.counters, max_tokens=settings.proposal_tokens, seed=seed)
    adapter = PlainAdapter(settings.answer_tokens, env.chat_template)
    evaluated = [p.prompt for p in env.train]
    pool = mining_pool(env.task, seed=env.seed, exclude=evaluated)[-settings.demo_pool :]
    if not pool:
        raise PlanInputError(
            f"task {env.task.name!r} has no training problem beyond the {len(env.train)} evaluated ones for DSPy to "
            "draw demonstrations from; lower --n-train."
        )
    trainset, valset = examples(pool), examples(env.train)
    metric = task_metric(env.task, pool + env.train + env.heldout)
    student = program(start_instructions)
    logging.getLogger("dspy").setLevel(logging.ERROR)
    with dspy.context(lm=task_lm, adapter=adapter):
        if method == "mipro":
            kwargs = {"auto": settings.auto} if settings.auto else {"auto": None, "num_candidates": settings.candidates}
            opt = dspy.MIPROv2(
                metric,
                prompt_model=task_lm,
                task_model=task_lm,
                max_bootstrapped_demos=settings.max_bootstrapped_demos,
                max_labeled_demos=settings.max_labeled_demos,
                num_threads=1,
                seed=seed,
                verbose=False,
                **kwargs,
            )
            compiled = opt.compile(
                student,
                trainset=trainset,
                valset=valset,
                num_trials=None if settings.auto else settings.trials,
                minibatch=False,
            )
        else:
            opt = dspy.BootstrapFewShotWithRandomSearch(
                metric,
                max_bootstrapped_demos=settings.max_bootstrapped_demos,
                max_labeled_demos=settings.max_labeled_demos,
                num_candidate_programs=settings.candidates,
                num_threads=1,
            )
            compiled = opt.compile(student, trainset=trainset, valset=valset)
    spent = Counters(**vars(env.counters))
    # What the returned program scores is measured apart from the optimizer's budget (as the planners' curves are).
    heldout_counters = Counters()
    held_lm = PonderLM(env.lm, heldout_counters, max_tokens=settings.answer_tokens, seed=seed)
    heldout = accuracy(compiled, env.task, env.heldout, held_lm, settings.answer_tokens, env.chat_template)
    env.counters.heldout_calls += heldout_counters.calls
    env.counters.heldout_tokens += heldout_counters.tokens
    train_acc = accuracy(
        compiled, env.task, env.train, PonderLM(env.lm, Counters()), settings.answer_tokens, env.chat_template
    )
    predictor = compiled.predictors()[0]
    chain = {
        "instructions": predictor.signature.instructions.splitlines(),
        "demos": [{QUESTION: d.get(QUESTION), ANSWER: d.get(ANSWER)} for d in predictor.demos],
    }
    summary = {
        "best_chain": chain,
        "best_heldout_accuracy": heldout,
        "best_train_accuracy": train_acc,
        "calls": spent.calls,
        "tokens": spent.tokens,
        "generated_tokens": spent.generated_tokens,
        "evaluations": None,
        "cache_hits": spent.cache_hits,
        "heldout_calls": heldout_counters.calls,
        "curve": [{"calls": spent.calls, "best_value": train_acc, "heldout_accuracy": heldout}],
    }
    return compiled, summary
