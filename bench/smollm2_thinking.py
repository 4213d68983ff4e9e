"""SmolLM2-135M that thinks: GRPO, TTRL, RLP and FLOP-matched CPT side by side, several seeds (issue 27).

Cells, each trained from SmolLM2-135M-Instruct with the default thought format (``ponder.lm.thinking``)
and measured on held-out data, each cached under ``--out`` so that a killed run resumes cell by cell
(the training runs resume through ``ponder``'s own checkpoints):

* ``base``: the model as loaded;
* ``warm`` (``--start DIR``): the format warm start (``bench/format_warmstart.py``'s ``final/``), the
  start of every trained cell, so RLP and CPT both begin from it and both have paid its compute;
* ``grpo-sS``: ``ponder grpo --reward verifiable`` on ``--task``'s train split, think mode;
* ``ttrl-sS``: ``ponder ttrl`` (majority vote, labels never used) on the train split's prompts, so that
  the test split stays held out for every model;
* ``rlp-sS`` and ``cpt-sS``: ``ponder rlp`` as the paper states it on the real-text corpus, then
  ``ponder cpt --match-run`` (FLOP-matched, same start) (:func:`rlp_smollm2.train`);
* ``rlp-rtw-sS`` (``--rtw W``): RLP with ``--reward-token-weight W``, the measured variant beside it.

Every model: greedy think and no-think accuracy on ``--eval-n`` problems of the task's test split,
the share of thoughts it closed and their length (``ponder.eval.accuracy.evaluate_mode``); the real-text
models also held-out information gain against the base and plain next-token loss
(:func:`rlp_smollm2.measure`). Writes ``--json`` in the issue's schema::

    OMP_NUM_THREADS=1 nohup python bench/smollm2_thinking.py --corpus /tmp/realtext --out runs/smol27 \\
        --seeds 0-2 --json bench/results/smollm2_thinking.json > runs/smol27.log 2>&1 &

RLP and CPT train the same LoRA adapters with ``--lora-rank``/``--lora-alpha`` and run data-parallel with
``--nproc N`` (``torchrun``, one thread per rank; on the 2-core machine ``--nproc 2 --lora-rank 16`` is the
fastest RLP, ``bench/smollm2_speed.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))

import rlp_smollm2  # noqa: E402  (a sibling script, not a package)
from ponder.config import parse_seeds  # noqa: E402
from ponder.data.registry import get_task  # noqa: E402
from ponder.lm.delimiters import THINK_CLOSE  # noqa: E402
from ponder.lm.thinking import ANSWER_STOPS, ThoughtFormat, think_then_answer  # noqa: E402
from ponder.models.lookup import load_model  # noqa: E402
from thought_format_smollm2 import last_number  # noqa: E402

MODEL = rlp_smollm2.MODEL
KINDS = ("grpo", "ttrl", "rlp", "cpt", "rlp-rtw")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="folder written by `ponder corpus build` (RLP, CPT, held-out IG)")
    p.add_argument("--out", default="runs/smollm2_thinking", help="run directories and per-cell results")
    p.add_argument("--seeds", default="0", type=parse_seeds, help="a range 0-2, a list 0,1,2 or both")
    p.add_argument("--model", default=MODEL, help="the base (tiny: a seconds-long check of the harness)")
    p.add_argument("--start", help="a warm start's final/ directory: every trained cell starts from it (row `warm`)")
    p.add_argument("--kinds", default="grpo,ttrl,rlp,cpt", help=f"comma separated, of {', '.join(KINDS)}")
    p.add_argument("--task", default="add1", help="the think-mode task (chosen by --probe: base between 0.1 and 0.7)")
    p.add_argument("--eval-n", type=int, default=64, help="held-out (test split) problems per accuracy")
    p.add_argument("--max-thought-tokens", type=int, default=32, help="thought budget, training and evaluation")
    # GRPO / TTRL.
    p.add_argument("--rl-steps", type=int, default=20)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--rl-group", type=int, default=8)
    p.add_argument("--rl-lr", type=float, default=1e-5)
    p.add_argument(
        "--answer-rule",
        default="last_number",
        help="GRPO/TTRL's answer rule (`ponder grpo --answer-rule`): the bench reads accuracy by the last "
        "number, so the reward must too (the task's first_line reads a chat answer's whole sentence)",
    )
    p.add_argument("--rl-args", default="", help="more `ponder grpo`/`ponder ttrl` flags, space separated")
    # RLP / CPT (the flags of bench/rlp_smollm2.py).
    p.add_argument("--steps", type=int, default=240, help="RLP steps (x --docs-per-step positions)")
    p.add_argument("--docs-per-step", type=int, default=4)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--ema-tau", type=float, default=0.999)
    p.add_argument("--rlp-args", default="", help="more `ponder rlp` flags, space separated")
    p.add_argument("--rtw", type=float, default=1.0, help="--reward-token-weight of the rlp-rtw cells")
    p.add_argument("--cpt-lr", type=float, default=2e-5)
    p.add_argument("--cpt-batch", type=int, default=8)
    p.add_argument("--match", default="flop", choices=["flop", "token", "compute"])
    rlp_smollm2.add_launch_args(p)
    p.add_argument("--eval-windows", type=int, default=24)
    p.add_argument("--eval-positions", type=int, default=2)
    p.add_argument("--eval-group", type=int, default=4)
    p.add_argument("--eval-batch", type=int, default=6)
    p.add_argument("--transfer", default="", help="comma-separated tasks written by others (e.g. rg:chain_sum): "
                   "every model's think/no-think accuracy on their test split too (--eval-n problems)")  # fmt: skip
    p.add_argument("--probe", help="comma-separated tasks: the base's think and no-think accuracy on each, then stop")
    p.add_argument(
        "--text",
        action="store_true",
        help="every cell (GRPO, TTRL, the base and the warm start too) also on held-out text: information "
        "gain, plain loss, thoughts closed; a cell measured before without it gets only this part",
    )
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's checkpoints/ (GBs each)")
    p.add_argument(
        "--table-only", action="store_true", help="write the table of the cells measured so far; train nothing"
    )
    p.add_argument("--json", help="write the issue's table here")
    return p.parse_args(argv)


def accuracy(lm, task_spec: str, args) -> dict:
    """Greedy think and no-think accuracy on the test split, share closed, thought length (default format).

    Two readings of an answer: the task's own score, and the last number of the answer (a chat model
    answers in a sentence; ``heldout_accuracy`` is the latter for numeric tasks, as issue 26 reads them).
    """
    task = get_task(task_spec)
    problems = task.problems(args.eval_n, seed=0, split="test")
    model, tok = lm.model, lm.tokenizer
    fmt = ThoughtFormat.of(model, tok)
    prompts = fmt.prompt_ids(tok, [p.prompt for p in problems])
    out = {"task": task_spec, "n": len(problems)}
    for think in (True, False):
        c = think_then_answer(
            model, tok, fmt, prompts, think=think, max_thought_tokens=args.max_thought_tokens, max_answer_tokens=24,
            batch_size=32,
        )  # fmt: skip
        answers = [a.split(THINK_CLOSE)[-1] for a in c.texts(tok, ANSWER_STOPS)]
        key = "heldout_accuracy" if think else "heldout_accuracy_no_think"
        out[key] = statistics.fmean(last_number(a) == p.answer.strip() for p, a in zip(problems, answers))
        out[key + "_task_score"] = statistics.fmean(task.score(p, a) for p, a in zip(problems, answers))
        if think:
            # Answers after the model's own </think> only (no close at the budget: s1's budget forcing off).
            right = [last_number(a) == p.answer.strip() for p, a in zip(problems, answers)]
            out["heldout_accuracy_own_close"] = statistics.fmean(r and bool(k) for r, k in zip(right, c.closed))
            out["closed_fraction"] = float(c.closed.float().mean())
            out["thought_tokens"] = float(c.thought_tokens.mean())
    return out


def rl_cell(kind: str, seed: int, args, out: Path) -> tuple[Path, float]:
    """Train ``ponder grpo`` / ``ponder ttrl`` for ``seed`` (skipped when done); its final model and wall seconds."""
    run = out / f"{kind}-s{seed}"
    settings = {
        "model": args.start or MODEL,
        "task": args.task,
        "seed": seed,
        "steps": args.rl_steps,
        "prompts_per_step": args.prompts_per_step,
        "group_size": args.rl_group,
        "max_thought_tokens": args.max_thought_tokens,
        "lr": args.rl_lr,
        "answer_rule": args.answer_rule,  # the reward reads answers as this bench's accuracy does
        "eval_n": 0,  # measured here, think and no-think, on the same problems for every model
        "report_to": "none",
        "device": "cpu",
        "out": run,
    }
    if kind == "grpo":
        settings["reward"] = "verifiable"
    else:
        settings["split"] = "train"  # unlabeled train prompts: the test split stays held out
    wall = 0.0
    summary = run / f"{kind}_summary.json"
    if not (run / "final").is_dir() and not trained_nothing(summary):
        argv = [kind, *rlp_smollm2.flags(settings), "--quiet", *args.rl_args.split()]
        try:
            wall = rlp_smollm2.run_cli(argv, out / f"{kind}-s{seed}.log")
        except SystemExit:
            if not trained_nothing(summary):
                raise
    if trained_nothing(summary):  # every group set aside (exit 3): the model is its start, measured as such
        return Path(args.start or MODEL), wall
    return run / "final", wall


def trained_nothing(summary: Path) -> bool:
    """A finished GRPO/TTRL run whose every step trained nothing (its summary says so; ``ponder`` exits 3)."""
    return summary.is_file() and bool(json.loads(summary.read_text()).get("trained_nothing"))


def rlp_cells(seed: int, args, out: Path, rtw: bool) -> dict[str, Path]:
    """RLP then its FLOP-matched CPT, for ``seed``; or RLP with the reward-token term alone (compared with
    the paper form's CPT: the same compute up to the reward's few tokens)."""
    sub = out / ("rtw" if rtw else "paper")
    sub.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(**vars(args))
    if rtw:
        ns.rlp_args = f"{args.rlp_args} --reward-token-weight {args.rtw}".strip()
    rlp_smollm2.train(seed, ns, sub, cpt=not rtw)
    paths = {"rlp": sub / f"rlp-s{seed}" / "final"}
    return paths if rtw else {**paths, "cpt": sub / f"cpt-s{seed}" / "final"}


def prune(final: Path, args) -> None:
    """Delete a finished run's resumable checkpoints (GBs of optimizer state; ``final/`` is what is measured)."""
    if not args.keep_checkpoints and final.is_dir():
        shutil.rmtree(final.parent / "checkpoints", ignore_errors=True)


def cached_cells(args, out: Path, kinds: list[str]) -> tuple[dict | None, dict | None, dict[str, list[dict]]]:
    """``(base, warm, cells)`` measured so far under ``out`` (a run still going or stopped); nothing is run."""

    def read(folder: Path, name: str) -> dict | None:
        path = folder / f"cell-{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    cells = {k: [] for k in kinds}
    for seed in args.seeds:
        for kind in kinds:
            folder = out / "rtw" if kind == "rlp-rtw" else out / "paper" if kind in ("rlp", "cpt") else out
            if (r := read(folder, f"{kind}-s{seed}")) is not None:
                cells[kind].append(r)
    return read(out, "base"), read(out, "warm"), cells


def measure_cell(name: str, path, base, args, out: Path, info_gain: bool, extra: dict) -> dict:
    """The figures of one trained model (cached in ``out/cell-<name>.json``)."""
    cached = out / f"cell-{name}.json"
    result = json.loads(cached.read_text()) if cached.is_file() else None
    if result is not None and (not info_gain or "heldout_info_gain" in result):
        return result
    t0 = time.time()
    lm = base if str(path) == MODEL else load_model(str(path), device="cpu", dtype=torch.float32)
    if result is None:
        result = {"cell": name, **extra, **accuracy(lm, args.task, args)}
        if args.transfer:
            result["transfer"] = {spec: accuracy(lm, spec, args) for spec in args.transfer.split(",")}
    if info_gain:  # also for a cell measured before without it (--text added later): only this part runs
        ns = argparse.Namespace(**vars(args), task_n=0)  # accuracy is measured above, once
        ig = rlp_smollm2.measure(name, str(path), base, ns, out)
        result.update({k: ig[k] for k in ("heldout_info_gain", "heldout_ntp_loss", "per_position_gain")})
        result["closed_fraction_text"] = ig["closed_fraction"]  # thoughts at held-out text positions (T = 0.7)
        result["thought_tokens_text"] = ig["thought_tokens_mean"]
        result["share_positive_gain"] = statistics.fmean(g > 0 for g in ig["per_position_gain"])
    result["eval_wall_s"] = round(result.get("eval_wall_s", 0.0) + time.time() - t0, 1)
    cached.write_text(json.dumps(result, indent=1))
    print(f"[{name}] " + json.dumps({k: v for k, v in result.items() if k != "per_position_gain"}), flush=True)
    return result


def positions_trained(final: Path) -> int | None:
    """RLP positions the run trained on: the ``positions`` counter of the ``rlp_summary.json`` beside ``final/``
    (summed over ranks by the engine); None when the run has not finished."""
    path = final.parent / "rlp_summary.json"
    if not path.is_file():
        return None
    return int(json.loads(path.read_text())["positions"])


def single_row(name: str, r: dict) -> dict:
    """The row of a model measured once (the base, the warm start)."""
    return {
        "model": name,
        "task": r["task"],
        "heldout_accuracy_per_seed": [r["heldout_accuracy"]],
        "heldout_accuracy_median": r["heldout_accuracy"],
        "heldout_accuracy_no_think": r["heldout_accuracy_no_think"],
        "closed_fraction": r["closed_fraction"],
        "thought_tokens": r["thought_tokens"],
        "heldout_info_gain": r.get("heldout_info_gain"),
        "heldout_info_gain_std": 0.0,
        "heldout_ntp_loss": r.get("heldout_ntp_loss"),
        "closed_fraction_text": r.get("closed_fraction_text"),
        "positions_trained": 0,
        **({"transfer": r["transfer"]} if "transfer" in r else {}),
    }


def table(cells: dict[str, list[dict]], base: dict, warm: dict | None = None) -> dict:
    """The issue's schema: one row per model kind, per-seed lists and medians."""
    rows = [single_row("base", base)] + ([single_row("warm", warm)] if warm else [])
    for kind, results in cells.items():
        if not results:
            continue
        acc = [r["heldout_accuracy"] for r in results]
        row = {
            "model": kind,
            "task": results[0]["task"],
            "seeds": [r["seed"] for r in results],
            "heldout_accuracy_per_seed": acc,
            "heldout_accuracy_median": statistics.median(acc),
            "heldout_accuracy_no_think_per_seed": [r["heldout_accuracy_no_think"] for r in results],
            "closed_fraction": statistics.median(r["closed_fraction"] for r in results),
            "thought_tokens": statistics.median(r["thought_tokens"] for r in results),
            "positions_trained": results[0].get("positions_trained"),
            "train_wall_s_per_seed": [r.get("train_wall_s") for r in results],
        }
        if all("transfer" in r for r in results):  # per task written by others: think accuracy per seed
            row["transfer_accuracy_per_seed"] = {
                spec: [r["transfer"][spec]["heldout_accuracy"] for r in results] for spec in results[0]["transfer"]
            }
            row["transfer_accuracy_no_think_per_seed"] = {
                spec: [r["transfer"][spec]["heldout_accuracy_no_think"] for r in results]
                for spec in results[0]["transfer"]
            }
            if all("heldout_accuracy_task_score" in t for r in results for t in r["transfer"].values()):
                row["transfer_task_score_per_seed"] = {  # the benchmark's own scorer (partial credit included)
                    spec: [r["transfer"][spec]["heldout_accuracy_task_score"] for r in results]
                    for spec in results[0]["transfer"]
                }
        if "heldout_info_gain" in results[0]:
            ig = [r["heldout_info_gain"] for r in results]
            row["heldout_info_gain_per_seed"] = ig
            row["heldout_info_gain"] = statistics.median(ig)
            row["heldout_info_gain_std"] = statistics.stdev(ig) if len(ig) > 1 else 0.0
            row["heldout_ntp_loss_per_seed"] = [r["heldout_ntp_loss"] for r in results]
            row["share_positive_gain_per_seed"] = [r["share_positive_gain"] for r in results]
            if all("closed_fraction_text" in r for r in results):
                row["closed_fraction_text_per_seed"] = [r["closed_fraction_text"] for r in results]
        rows.append(row)
    return {"rows": rows, "base_accuracy": base["heldout_accuracy"]}


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(kinds) - set(KINDS):
        raise SystemExit(f"unknown --kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    corpus, out = Path(args.corpus), Path(args.out)
    if not (corpus / "heldout.jsonl").is_file():
        raise SystemExit(f"{corpus} has no heldout.jsonl: build it with `ponder corpus build --out {corpus}`")
    out.mkdir(parents=True, exist_ok=True)
    global MODEL
    MODEL = rlp_smollm2.MODEL = args.model  # the base; trained cells start from --start when given
    if args.table_only:
        base_row, warm_row, cells = cached_cells(args, out, kinds)
        if base_row is None:
            raise SystemExit(f"{out} has no measured base (cell-base.json) yet; run without --table-only first")
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "probe")}
        payload = {"model": MODEL, **table(cells, base_row, warm_row), "settings": settings, "partial": True}
        return write_table(payload, args)
    base = load_model(MODEL, device="cpu", dtype=torch.float32)
    if args.probe:
        for spec in args.probe.split(","):
            t0 = time.time()
            print(json.dumps({**accuracy(base, spec, args), "wall_s": round(time.time() - t0, 1)}), flush=True)
        return None
    t_start = time.time()
    real_text = args.text or bool({"rlp", "cpt", "rlp-rtw"} & set(kinds))
    base_row = measure_cell("base", MODEL, base, args, out, real_text, {})
    warm_row = measure_cell("warm", args.start, base, args, out, real_text, {}) if args.start else None
    cells: dict[str, list[dict]] = {k: [] for k in kinds}
    for seed in args.seeds:
        for kind in ("grpo", "ttrl"):
            if kind in kinds:
                t0 = time.time()
                path, _ = rl_cell(kind, seed, args, out)
                if out in path.parents:  # not the start itself (a run that trained nothing)
                    prune(path, args)
                extra = {"seed": seed, "train_wall_s": round(time.time() - t0, 1)}
                extra["trained_nothing"] = trained_nothing(out / f"{kind}-s{seed}" / f"{kind}_summary.json")
                cells[kind].append(measure_cell(f"{kind}-s{seed}", path, base, args, out, args.text, extra))
        for rtw in (False, True):
            name = "rlp-rtw" if rtw else "rlp"
            if name not in kinds and (rtw or "cpt" not in kinds):
                continue
            t0 = time.time()
            paths = rlp_cells(seed, args, out, rtw)
            for path in paths.values():
                prune(path, args)
            extra = {"seed": seed, "train_wall_s": round(time.time() - t0, 1)}
            for kind, path in paths.items():
                label = "rlp-rtw" if rtw else kind
                if label not in kinds:
                    continue
                cell_extra = {**extra, "positions_trained": positions_trained(paths["rlp"])}
                sub = out / ("rtw" if rtw else "paper")
                cells[label].append(measure_cell(f"{label}-s{seed}", path, base, args, sub, True, cell_extra))
    payload = {
        "model": MODEL,
        **table(cells, base_row, warm_row),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "probe")},
        "bench_wall_s": round(time.time() - t_start, 1),
    }
    return write_table(payload, args)


def write_table(payload: dict, args) -> dict:
    print(json.dumps(payload["rows"], indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()
