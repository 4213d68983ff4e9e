"""Rescore ``ponder eval --json`` outputs of BIG-bench files with BIG-bench's own code, and compare.

BIG-bench (``pip download bigbench==1.0.0``, unpacked; not a ponder dependency) is imported from
``--bigbench`` with stand-ins for the packages only its unused metrics need (tensorflow for file
loading and logging; datasets, t5 and scikit-learn for bleu, rouge, bleurt, macro_f1); scipy and
numpy are real. Its ``JsonTask`` formats the file's examples (its own prompts, its own
``max_examples`` draw at ``random_seed`` 42) and evaluates a replay model: ``generate_text`` returns
the answer ponder's model wrote after the prompt (after the thought in think mode), run through
BIG-bench's ``postprocess_output``; ``cond_log_prob`` returns ponder's option log-probs. A
prompt BIG-bench builds that ponder did not evaluate is an error, so the prompts are checked
too. Prints one row per (file, mode): ponder's and BIG-bench's value of every metric.

    python bench/bigbench_crosscheck.py --bigbench /tmp/bb/bigbench-1.0.0 --tasks BB/arithmetic/3_digit_addition \
        --results /tmp/bb_eval   # needs scipy on the path
    python bench/bigbench_crosscheck.py --bigbench ... --tasks ... --prompts   # prompts only, 0-3 shots
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

THINK_CLOSE = "</think>"


def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def import_bigbench(root: Path):
    """BIG-bench's json_task, model_utils and model API, with stand-ins for the packages its used code never calls."""
    tf = _stub("tensorflow", logging=types.SimpleNamespace(info=print))
    compat = _stub("tensorflow.compat")
    tf.compat = compat
    compat.v1 = _stub("tensorflow.compat.v1", logging=types.SimpleNamespace(info=print))
    compat.v2 = _stub("tensorflow.compat.v2")
    _stub("datasets", load_metric=None)
    _stub("t5")
    _stub("t5.evaluation", metrics=None)
    _stub("sklearn")
    _stub("sklearn.metrics", f1_score=None)
    sys.path.insert(0, str(root))
    import bigbench.api.json_task as json_task
    import bigbench.api.model as model_api
    import bigbench.models.model_utils as model_utils

    return json_task, model_api, model_utils


def replay_model(model_api, model_utils, examples: list[dict]):
    """A BIG-bench ``Model`` answering from ponder's recorded outputs (looked up by BIG-bench's own input text)."""
    by_input = {}
    for ex in examples:
        by_input.setdefault(ex["task_input"], []).append(ex)

    def lookup(text: str) -> list[dict]:
        if text not in by_input:
            raise KeyError(f"BIG-bench built a prompt ponder did not evaluate: {text[:200]!r}")
        return by_input[text]

    class Replay(model_api.Model):
        def generate_text(self, inputs, max_length=0, stop_string=None, output_regex=None):
            outs = []
            for text in [inputs] if isinstance(inputs, str) else inputs:
                raw = lookup(text)[0]["raw_output"]
                outs.append(raw.split(THINK_CLOSE, 1)[1] if THINK_CLOSE in raw else raw)
            outs = model_utils.postprocess_output(outs, max_length, stop_string, output_regex)
            return outs[0] if isinstance(inputs, str) else outs

        def cond_log_prob(self, inputs, targets, absolute_normalization=False):
            rows = []
            for text, opts in zip([inputs] if isinstance(inputs, str) else inputs, targets):
                ex = next(e for e in lookup(text) if set(e["option_log_probs"]) == set(opts))
                rows.append([ex["option_log_probs"][o] for o in opts])
            return rows[0] if isinstance(inputs, str) else rows

        def model_data(self):
            return None

    return Replay()


def check_prompts(json_task, folders: list[str], shots_list=(0, 1, 2, 3), sizes=(50, 100, 10**6)) -> bool:
    """ponder's prompts (``--split all --seed 42``, ``--shots``) against BIG-bench's ``make_nshot_dataset``."""
    from ponder.data.bigbench import BigBenchTask

    ok = True
    print("| file | shots | max_examples | prompts | identical |")
    print("| --- | ---: | ---: | ---: | --- |")
    for folder in folders:
        data = json.loads((Path(folder) / "task.json").read_text())
        for shots in shots_list:
            for n in sizes:
                bb = json_task.JsonTask(json.loads(json.dumps(data)), max_examples=n, random_seed=42, shot_list=[shots])
                samples = json_task.make_nshot_dataset(
                    bb._ds, shots, random_seed=42, separator=bb.few_shot_example_separator, max_examples=bb.num_examples
                )
                theirs = [bb.task_prefix + s["input"] for s in samples]
                task = BigBenchTask(Path(folder) / "task.json")
                task.shots = shots
                same = theirs == [p.prompt for p in task.problems(n, seed=42, split="all")]
                ok &= same
                print(
                    f"| {Path(folder).name} | {shots} | {min(n, len(bb._ds))} | {len(theirs)} | {'yes' if same else 'NO'} |"
                )
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bigbench", required=True, help="the unpacked bigbench-1.0.0 folder (holds bigbench/)")
    ap.add_argument("--tasks", nargs="+", required=True, help="task folders (each holds task.json)")
    ap.add_argument("--results", help="folder of ponder eval --json outputs named <task>.json")
    ap.add_argument("--prompts", action="store_true", help="compare ponder's prompts (0-3 shots) with BIG-bench's")
    args = ap.parse_args()
    if args.prompts:
        import ponder.data.bigbench  # noqa: F401 - before the stand-ins below (torch inspects real packages)
    json_task, model_api, model_utils = import_bigbench(Path(args.bigbench))
    if args.prompts:
        sys.exit(0 if check_prompts(json_task, args.tasks) else 1)
    print("| file | mode | n | metric | ponder | BIG-bench | equal |")
    print("| --- | --- | ---: | --- | ---: | ---: | --- |")
    all_equal = True
    for folder in args.tasks:
        name = Path(folder).name
        result = json.loads((Path(args.results) / f"{name}.json").read_text())
        data = json.loads((Path(folder) / "task.json").read_text())
        for mode in ("no_think", "think"):
            if mode not in result:
                continue
            ours = result[mode]
            task = json_task.JsonTask(data, max_examples=result["n"], random_seed=42)
            theirs = task.evaluate_fixed_shot(replay_model(model_api, model_utils, ours["examples"]), 0)
            for metric, value in sorted(theirs.items()):
                mine = ours["metrics"].get(metric)
                equal = mine is not None and abs(mine - value) <= 1e-9 * max(1.0, abs(value))
                all_equal &= equal
                print(f"| {name} | {mode} | {result['n']} | {metric} | {mine} | {value} | {'yes' if equal else 'NO'} |")
    print("all equal" if all_equal else "MISMATCH")
    sys.exit(0 if all_equal else 1)


if __name__ == "__main__":
    main()
