"""A model on a BIG-bench JSON task, scored as BIG-bench scores it (zero-shot), in think or no-think mode.

Per example (see :mod:`ponder.data.bigbench` for the prompt and answer rules):

* **generative metrics** (``exact_str_match``, ...): a greedy answer after the prompt (after
  ``<think> thought </think>`` in think mode), ended by EOS, the file's ``stop_string`` or the
  answer budget, post-processed by the file's rule, compared with ``target``;
* **multiple-choice metrics** (``multiple_choice_grade``, ...): the log-likelihood of each option
  (its tokens, tokenized alone as BIG-bench does, appended to the prompt's ids; in think mode
  to ``prompt <think> thought </think>``), through :func:`ponder.lm.score.score_pairs`, batched;
* ``log_likelihood``: the same for each target.

With a chat template the prompt's scaffold (``example_output_prefix``) opens the assistant turn
and the rest is the user turn (:meth:`ponder.lm.thinking.ThoughtFormat.prompt_ids`). Thoughts are
greedy, one per example, shared by the generative and the multiple-choice scoring.
"""

from __future__ import annotations

from ponder.data.bigbench import BigBenchTask
from ponder.data.bigbench_metrics import NOT_COMPUTED, bigbench_argmax, measure, normalized_log_probs
from ponder.data.task import Problem, problem_answer_prefixes
from ponder.errors import TaskError
from ponder.eval.results import ModeResult, decode_prompts, mode_warnings
from ponder.lm.delimiters import THINK_CLOSE, THINK_OPEN
from ponder.lm.score import score_options
from ponder.lm.thinking import ThoughtFormat, sample_thoughts, think_then_answer
from ponder.progress import make_progress


def option_log_probs(
    model, tokenizer, contexts: list[list[int]], options: list[list[str]], batch_size: int | None
) -> list[list[float]]:
    """``[example][option]`` absolute log-prob of each option string after its example's context ids (fp32 sums)."""
    return [row.tolist() for row in score_options(model, tokenizer, contexts, options, batch_size=batch_size)]


def evaluate_bigbench_mode(
    model,
    tokenizer,
    task: BigBenchTask,
    problems: list[Problem],
    fmt: ThoughtFormat,
    think: bool,
    max_thought_tokens: int,
    max_answer_tokens: int,
    batch_size: int | None,
    progress: bool = False,
) -> ModeResult:
    """Every metric of ``task`` on ``problems`` (greedy); the headline is the file's ``preferred_score``."""
    mode = "think" if think else "no_think"
    if task.preferred_score in NOT_COMPUTED or task.preferred_score.startswith("rouge"):
        raise TaskError(
            f"{task.name}: its preferred_score {task.preferred_score!r} is not computed by ponder "
            f"({NOT_COMPUTED.get(task.preferred_score, NOT_COMPUTED['rouge'])}); pick a file scored by "
            "exact_str_match, multiple_choice_grade or another metric ponder computes"
        )
    prompt_ids = fmt.prompt_ids(tokenizer, [p.prompt for p in problems], problem_answer_prefixes(problems))
    stops = (task.stop_string,) if task.stop_string else ()
    step = batch_size or max(len(problems), 1)
    texts: list[str] = []
    closed: list[bool] = []
    thought_tokens: list[int] = []
    absolute: list[list[float]] = []
    target_lp: list[list[float]] = []
    with make_progress(progress) as bar:
        job = bar.add_task(f"{task.name} {mode}", total=len(problems))
        for a in range(0, len(problems), step):
            chunk, ids = problems[a : a + step], prompt_ids[a : a + step]
            thoughts = None
            contexts = [list(p) for p in ids]
            if think:
                thoughts = sample_thoughts(
                    model, tokenizer, fmt, ids, 1, max_thought_tokens, temperature=0.0, batch_size=batch_size
                )
                contexts = [p + [fmt.open_id, *t, fmt.close_id] for p, t in zip(contexts, thoughts.ids)]
                closed += [bool(c) for c in thoughts.closed]
                thought_tokens += [len(t) for t in thoughts.ids]
            else:
                closed += [True] * len(chunk)
            if task.generative_metrics:
                comp = think_then_answer(
                    model,
                    tokenizer,
                    fmt,
                    ids,
                    think=think,
                    thoughts=thoughts,
                    max_thought_tokens=max_thought_tokens,
                    max_answer_tokens=max_answer_tokens,
                    temperature=0.0,
                    stops=stops,
                    batch_size=batch_size,
                )
                texts += comp.texts(tokenizer, ())  # uncut: BIG-bench's rule keeps the stop string
            elif think:
                thought_texts = tokenizer.batch_decode(thoughts.ids, clean_up_tokenization_spaces=False)
                texts += [f"{THINK_OPEN}{t}{THINK_CLOSE}" for t in thought_texts]
            else:
                texts += [""] * len(chunk)
            if task.multiple_choice_metrics:
                absolute += option_log_probs(model, tokenizer, contexts, [list(p.choices) for p in chunk], batch_size)
            if task.scoring_metrics:
                target_lp += option_log_probs(
                    model, tokenizer, contexts, [p.meta["targets"] for p in chunk], batch_size
                )
            bar.advance(job, len(chunk))
    responses = [task.response(t) for t in texts] if task.generative_metrics else None
    targets = [p.meta["targets"] for p in problems]
    mc = bool(task.multiple_choice_metrics)
    metrics, per_example = measure(
        task.generative_metrics + task.multiple_choice_metrics + task.scoring_metrics,
        targets,
        responses=responses,
        choices=[list(p.choices) for p in problems] if mc else None,
        target_scores=[p.meta["target_scores"] for p in problems] if mc else None,
        absolute_log_probs=absolute if mc else None,
        target_log_probs=target_lp or None,
        absolute_normalization=task.absolute_normalization,
    )
    # Multiple choice only: the "answer" is the chosen option (argmax, as multiple_choice_grade picks it).
    chooser = absolute if task.absolute_normalization else [normalized_log_probs(a) for a in absolute]
    answers = responses if responses is not None else [_chosen(p, lp) for p, lp in zip(problems, chooser)]
    unclosed = sum(not c for c in closed) / len(problems)
    no_answer = sum(not a for a in answers) / len(problems) if responses is not None else 0.0
    shown = decode_prompts(tokenizer, prompt_ids)
    examples = []
    for i, p in enumerate(problems):
        row = {
            "prompt": shown[i],
            "task_input": p.prompt,  # BIG-bench's own formatted input (what its code looks examples up by)
            "raw_output": texts[i],
            "answer": answers[i],
            "targets": p.meta["targets"],
            "scores": per_example[i],
            "closed": closed[i],
        }
        if mc:
            row["option_log_probs"] = dict(zip(p.choices, absolute[i]))
        examples.append(row)
    skipped = [m for m in task.metrics if m in NOT_COMPUTED]
    return ModeResult(
        accuracy=metrics[task.preferred_score],
        mean_thought_tokens=sum(thought_tokens) / len(problems) if think else 0.0,
        unclosed_fraction=unclosed,
        no_answer_fraction=no_answer,
        per_problem=[row.get(task.preferred_score, float("nan")) for row in per_example],
        metric=task.preferred_score,
        metrics=metrics,
        answer_rule=task.answer_rule_description(),
        examples=examples,
        warnings=mode_warnings(mode, think, unclosed, no_answer, max_thought_tokens)
        + [f"{mode}: metric {m} not computed ({NOT_COMPUTED[m]})" for m in skipped],
    )


def _chosen(problem: Problem, log_probs: list[float]) -> str | None:
    return problem.choices[bigbench_argmax(log_probs)] if log_probs else None
