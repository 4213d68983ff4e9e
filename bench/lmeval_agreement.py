"""Does lm-evaluation-harness, on a ``ponder export-task`` task, score a ponder checkpoint as ``ponder eval`` does?

For each checkpoint (an HF folder ponder wrote) and mode: export ``--n`` problems, run the harness's ``hf``
model on the task (think mode with ``think_end_token`` = the checkpoint's ``</think>``), run ``ponder eval``
on the same problems, and print one markdown row: both accuracies, how many answers are the same
string (ponder's greedy answer, normalised, against the harness's filtered line), how many distinct
answers there were, and the share of thoughts ponder saw closed by the model. Needs ``lm_eval``.

    PYTHONPATH=src:/path/to/lm_eval python bench/lmeval_agreement.py --task add2 --n 100 RUN/final ...
"""

from __future__ import annotations

import argparse
import tempfile

from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from ponder.data.registry import get_task
from ponder.data.task import normalize_answer
from ponder.eval.accuracy import evaluate
from ponder.jobs.lmeval_task import ExportTaskJob, run_export_task
from ponder.lm.thinking import ANSWER_STOPS, ThoughtFormat, think_then_answer
from ponder.models.lookup import load_model


def first_text(resps) -> str:
    while isinstance(resps, list):
        resps = resps[0]
    return resps


def row(model_dir: str, task_name: str, mode: str, n: int, budget: int, out: str) -> str:
    written = run_export_task(ExportTaskJob(task=task_name, n=n, mode=mode, max_thought_tokens=budget, out=out))
    lm, task = load_model(model_dir, device="cpu"), get_task(task_name)
    fmt = ThoughtFormat.of(lm.model, lm.tokenizer)
    args = f"pretrained={model_dir},dtype=float32" + (f",think_end_token={fmt.close_id}" if mode == "think" else "")
    res = simple_evaluate(
        model="hf",
        model_args=args,
        device="cpu",
        tasks=[written["name"]],
        task_manager=TaskManager(include_path=out),
        batch_size=16,
        log_samples=True,
        apply_chat_template=fmt.chat,
    )
    harness = res["results"][written["name"]]["exact_match,answer_line"]
    samples = sorted(res["samples"][written["name"]], key=lambda s: s["doc_id"])
    think = mode == "think"
    ours = evaluate(lm.model, lm.tokenizer, task, n=n, seed=0, modes=(mode,), max_thought_tokens=budget).modes[mode]
    problems = task.problems(n, seed=0, split="test")
    comp = think_then_answer(
        lm.model,
        lm.tokenizer,
        fmt,
        fmt.prompt_ids(lm.tokenizer, [p.prompt for p in problems]),
        think=think,
        max_thought_tokens=budget,
        max_answer_tokens=32,
        temperature=0.0,
        stops=ANSWER_STOPS,
    )
    answers = [normalize_answer(task.extract_answer(t) or "") for t in comp.texts(lm.tokenizer, ANSWER_STOPS)]
    theirs = [first_text(s["filtered_resps"]).lower() for s in samples]
    same = sum(a == b for a, b in zip(answers, theirs))
    closed = f"{float(comp.closed.float().mean()):.2f}" if think else "-"
    return (
        f"| {model_dir} | {task_name} | {mode} | {len(problems)} | {ours.accuracy:.3f} | {harness:.3f} | "
        f"{same}/{len(problems)} | {len(set(answers))} | {closed} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="HF checkpoint folders written by ponder")
    parser.add_argument("--task", default="add2")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--budget", type=int, default=24, help="thought budget")
    parser.add_argument("--modes", default="think,no_think")
    args = parser.parse_args()
    print(
        "| checkpoint | task | mode | n | ponder eval | lm-eval exact_match | same answers | distinct answers | closed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as out:
        for model_dir in args.models:
            for mode in args.modes.split(","):
                print(row(model_dir, args.task, mode, args.n, args.budget, out), flush=True)


if __name__ == "__main__":
    main()
