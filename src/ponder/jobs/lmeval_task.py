"""``ponder export-task``: a task's held-out problems as JSONL, with an lm-evaluation-harness task that reads them.

ponder's checkpoints are Hugging Face folders, so lm-evaluation-harness's ``hf`` model loads them as
they are; what the harness lacks is ponder's tasks. This job writes the problems ``ponder eval``
measures (the same ``--n`` and ``--seed`` draw the same problems) to ``OUT/NAME.jsonl`` and a task
``OUT/NAME.yaml`` on that file (``dataset_path: json``) that scores them as ``ponder eval`` does, in
one mode:

* ``think``: the prompt, then ``<think>`` opened for the model (lm-eval's ``gen_prefix``; after the
  assistant turn's start under ``--apply_chat_template``), greedy; with the model argument
  ``think_end_token=<id of </think>>`` the harness keeps what follows the closed thought;
* ``no_think``: the prompt as it is, greedy up to the first newline.

The answer is the first non-empty line, trimmed of surrounding whitespace and trailing ``.!?;,``,
compared case-insensitively with the reference (``exact_match``): ponder's ``normalize_answer``.
With ``--model`` the job prints the complete ``lm_eval`` command for that checkpoint (its
``</think>`` id, and ``--apply_chat_template`` where ponder prompts through the chat template).

What ponder does and the harness cannot: ponder bans the thought delimiters while a no-think answer
is generated (a model that opens a thought there writes one under the harness), closes a thought at
the thought budget (the harness lets it run to ``max_gen_toks``) and keeps a space left before
trailing punctuation (``"101 ,"`` is ``"101 "`` to ponder, ``"101"`` to the harness's filter). On
thoughts the model closes itself within the budget, greedy answers are the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.registry import DEMO_TASK, get_task
from ponder.data.task import task_thought_budget
from ponder.errors import TaskError
from ponder.lm.delimiters import THINK_OPEN
from ponder.lm.thinking import ANSWER_STOPS, ThoughtFormat
from ponder.models.lookup import load_model

#: The answer ponder compares (``ponder.data.task.normalize_answer`` without the lower-casing, which the
#: metric's ``ignore_case`` does): the first non-empty line, surrounding whitespace and trailing ``.!?;,`` dropped.
ANSWER_LINE_REGEX = r"^\s*([^\n]*?)[^\S\n]*[.!?;,]*[^\S\n]*(?:\n|$)"


class _Dumper(yaml.SafeDumper):
    """Writes a string holding a newline (the stop string) as ``"\\n"`` rather than across two lines."""


_Dumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style='"' if "\n" in s else None)
)


class ExportTaskJob(BaseModel):
    """Settings of ``ponder export-task``."""

    model_config = SETTINGS
    task: str = Field(
        DEMO_TASK, description="task name (see `ponder tasks`), rg:<reasoning-gym name> or a BIG-bench task.json"
    )
    n: int = Field(200, ge=1, description="problems written: the ones `ponder eval --n N --seed S` measures")
    seed: int = Field(0, description="seed of the problem draw (as `ponder eval --seed`)")
    split: Literal["train", "test"] = Field("test", description="task split (ponder eval measures test)")
    mode: Literal["think", "no_think"] = Field("think", description="which mode of ponder eval the task reproduces")
    max_thought_tokens: int | None = Field(None, ge=1, description="thought budget (default: from the task, else 256)")
    max_answer_tokens: int = Field(32, ge=1, description="answer budget (ponder eval's default)")
    model: str | None = Field(
        None, description="a checkpoint to print the complete lm_eval command for (its </think> id, chat template)"
    )
    name: str | None = Field(None, description="lm-eval task name (default: ponder_<task>_<mode>)")
    out: str = Field("runs/lmeval", description="folder for NAME.jsonl and NAME.yaml (lm_eval --include_path)")


def lmeval_task_name(task: str) -> str:
    """``ponder_<task>`` with every character lm-eval's task names and file names avoid replaced by ``_``."""
    stem = Path(task).parent.name if task.endswith(".json") else task
    return "ponder_" + re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_")


def lmeval_task_config(
    name: str, data_file: Path, mode: str, max_thought_tokens: int, max_answer_tokens: int, source: dict
) -> dict:
    """The lm-eval task (a YAML document) that scores ``data_file``'s ``prompt``/``answer`` rows (module doc)."""
    if mode == "think":  # the thought, </think> and the answer; only the eos ends it (a thought may hold newlines)
        generation = {"until": [], "do_sample": False, "max_gen_toks": max_thought_tokens + 1 + max_answer_tokens}
        prompt = {"doc_to_text": "{{prompt}}", "gen_prefix": THINK_OPEN, "target_delimiter": ""}
    else:
        generation = {"until": list(ANSWER_STOPS), "do_sample": False, "max_gen_toks": max_answer_tokens}
        prompt = {"doc_to_text": "{{prompt}}"}
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "generate_until",
        **prompt,
        "doc_to_target": "{{answer}}",
        "generation_kwargs": generation,
        "filter_list": [{"name": "answer_line", "filter": [{"function": "regex", "regex_pattern": ANSWER_LINE_REGEX}]}],
        "metric_list": [
            {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True}
        ],
        "metadata": {"version": 1.0, "ponder": source},
    }


def lmeval_command(name: str, include_path: str, model: str, mode: str, close_id: int | None, chat: bool) -> str:
    """The ``lm_eval`` command line that runs task ``name`` on checkpoint ``model`` as ponder eval's ``mode`` does."""
    args = f"pretrained={model}" + (f",think_end_token={close_id}" if mode == "think" else "")
    return (
        f"lm_eval --model hf --model_args {args} --include_path {include_path} --tasks {name}"
        + (" --apply_chat_template" if chat else "")
        + " --log_samples --output_path OUTPUT"
    )


def run_export_task(job: ExportTaskJob) -> dict:
    """Write ``OUT/NAME.jsonl`` and ``OUT/NAME.yaml``; return their paths and the problem count."""
    task = get_task(job.task)
    problems = task.problems(job.n, seed=job.seed, split=job.split)
    if not problems:
        raise TaskError(f"task {job.task} has no {job.split} problems to export")
    name = job.name or f"{lmeval_task_name(job.task)}_{job.mode}"
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    data = (out / f"{name}.jsonl").resolve()
    data.write_text("".join(json.dumps({"prompt": p.prompt, "answer": p.answer}) + "\n" for p in problems))
    budget = task_thought_budget(task, job.max_thought_tokens)
    source = {"task": job.task, "n": len(problems), "seed": job.seed, "split": job.split, "mode": job.mode}
    source["max_thought_tokens"] = budget
    config = lmeval_task_config(name, data, job.mode, budget, job.max_answer_tokens, source)
    (out / f"{name}.yaml").write_text(yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True))
    written = {"name": name, "data": str(data), "yaml": str(out / f"{name}.yaml"), "problems": len(problems)}
    if job.model:
        lm = load_model(job.model, device="cpu")
        fmt = ThoughtFormat.of(lm.model, lm.tokenizer)
        model_dir = job.model if Path(job.model).is_dir() else "MODEL_DIR"  # the harness loads HF folders only
        written["command"] = lmeval_command(name, job.out, model_dir, job.mode, fmt.close_id, fmt.chat)
    return written
