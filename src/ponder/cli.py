"""The ``ponder`` command: one subcommand per job. Thin: parse, build the config, call the job."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.markup import escape

from ponder import __version__
from ponder.config import add_model_arguments, config_from_args
from ponder.data.registry import DEMO_TASK, known_tasks
from ponder.errors import ConfigError, PonderError
from ponder.jobs.audit import DIAGNOSTICS, AuditJob, run_audit
from ponder.jobs.demo import DemoJob, run_demo
from ponder.jobs.early_experience import EarlyExperienceJob, early_experience_table, run_early_experience
from ponder.jobs.eval import EvalJob, run_eval
from ponder.jobs.grpo import TRAINED_NOTHING_EXIT, GRPOJob, TTRLJob, run_grpo, run_ttrl
from ponder.jobs.plan import PlanJob, run_plan
from ponder.jobs.refine import RefineJob, run_refine
from ponder.jobs.rlp import CPTJob, RLPJob, run_cpt, run_rlp
from ponder.jobs.thought_mdp import ThoughtMDPJob, run_thought_mdp
from ponder.jobs.trelawney import TrelawneyJob, run_trelawney
from ponder.models.tiny_base import BaseJob, base_dir, run_base
from ponder.progress import console
from ponder.report.demo_report import demo_table
from ponder.report.tables import console as out
from ponder.report.tables import print_eval_table, print_table
from ponder.report.thought_mdp_report import summary_table as thought_mdp_summary
from ponder.train.rundir import prepare_json_path, write_json_file

#: Commands that join the process group of ``torchrun`` / ``accelerate launch`` (each rank trains its share).
DATA_PARALLEL_COMMANDS = ("rlp", "grpo", "ttrl", "cpt", "base", "trelawney", "refine", "early-experience")


def check_launch(command: str | None, environ=os.environ) -> None:
    """A command that runs in one process, launched as several ranks, is refused before any rank writes: each
    would redo the work and contend for the run directory."""
    world = environ.get("WORLD_SIZE", "1")
    if command and command not in DATA_PARALLEL_COMMANDS and world.isdigit() and int(world) > 1:
        raise ConfigError(
            f"ponder {command} runs in one process, but this launcher started {world} (WORLD_SIZE={world}); run it "
            f"without torchrun / accelerate launch (data-parallel commands: {', '.join(DATA_PARALLEL_COMMANDS)})"
        )


def _add_job(sub, name: str, config_cls, func, help_text: str, description: str):
    p = sub.add_parser(
        name, help=help_text, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--config", metavar="YAML", help="YAML file of settings; flags override it")
    add_model_arguments(p, config_cls)
    p.set_defaults(func=func, config_cls=config_cls)
    return p


def _add_run_flags(p, resume: bool = True, json_out: bool = True, config_change: bool | None = None) -> None:
    if resume:
        p.add_argument(
            "--resume",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="continue from the newest intact checkpoint in the output directory; --no-resume starts over, "
            "deleting the directory's checkpoints, final model and metrics",
        )
    if resume if config_change is None else config_change:
        p.add_argument(
            "--allow-config-change",
            action="store_true",
            help="resume a run whose saved settings differ from these (changes are recorded in run.json); "
            "without it a change that alters the run (lr, seed, corpus, model, ...) is an error",
        )
    if json_out:
        p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _json_target(args) -> Path | None:
    """``--json PATH`` checked writable before any work (None when not given)."""

    return prepare_json_path(args.json) if getattr(args, "json", None) else None


def _write_json(path: Path | None, payload) -> None:

    if path is not None:
        write_json_file(path, payload)
        console.print(f"wrote {path}")


def cmd_base(args) -> int:

    job = config_from_args(BaseJob, args)
    json_path = _json_target(args)
    out = Path(job.out) if job.out else base_dir(job)
    console.print(f"[bold]ponder base[/]: training the tiny model into {out}")
    summary = run_base(
        job, out, resume=args.resume, progress=not args.quiet, allow_config_change=args.allow_config_change
    )
    print_eval_table(summary["eval"], title=f"tiny model after {summary['steps']} steps ({summary['seconds']:.0f} s)")
    console.print(f"model: {out / 'final'} (weights fingerprint {summary['weights_fingerprint']})")
    _write_json(json_path, summary)
    return 0


def cmd_eval(args) -> int:

    job = config_from_args(EvalJob, args)
    json_path = _json_target(args)
    result = run_eval(job, progress=not args.quiet)
    data = result.to_json(samples=job.samples)  # None (the default): every example
    print_eval_table(data, title=f"{job.model} on {result.task} (n={result.n}, seed={result.seed})")
    for mode in result.modes.values():
        out.print(f"answer rule: {mode.answer_rule}", highlight=False)
        break
    for mode in result.modes.values():
        for line in mode.warnings:
            console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
    _write_json(json_path, data)
    return 0


def _print_summary(title: str, summary: dict) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)


def cmd_rlp(args) -> int:

    job = config_from_args(RLPJob, args)
    summary = run_rlp(job, resume=args.resume, progress=not args.quiet, allow_config_change=args.allow_config_change)
    _print_summary(f"ponder rlp: {job.model} -> {job.out}/final", summary)
    return 0


def cmd_cpt(args) -> int:

    job = config_from_args(CPTJob, args)
    summary = run_cpt(job, resume=args.resume, progress=not args.quiet, allow_config_change=args.allow_config_change)
    _print_summary(f"ponder cpt: {job.model} -> {job.out}/final", summary)
    return 0


def cmd_grpo(args) -> int:

    job_cls, run = (GRPOJob, run_grpo) if args.command == "grpo" else (TTRLJob, run_ttrl)
    job = config_from_args(job_cls, args)
    summary = run(job, resume=args.resume, progress=not args.quiet, allow_config_change=args.allow_config_change)
    if summary["trained_nothing"]:
        _print_summary(f"ponder {args.command}: {job.model} trained nothing (no model written)", summary)
        return TRAINED_NOTHING_EXIT
    _print_summary(f"ponder {args.command}: {job.model} -> {job.out}/final", summary)
    return 0


def cmd_demo(args) -> int:
    from rich.table import Table

    if args.quick and args.config:
        raise PonderError("--quick and --config are exclusive: --quick is a preset")
    job = DemoJob.quick() if args.quick else config_from_args(DemoJob, args)
    if args.quick and hasattr(args, "out"):  # unset flags are absent from args (argparse.SUPPRESS)
        job = job.model_copy(update={"out": args.out})
    json_path = _json_target(args)
    payload = run_demo(job, progress=not args.quiet, allow_config_change=args.allow_config_change)
    header, rows = demo_table(payload)
    table = Table(title=f"ponder demo on {payload['task']} (seeds {payload['seeds']}, n={payload['eval_n']})")
    for h in header:
        table.add_column(h, justify="right")
    for row in rows:
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    out.print(table)
    out.print(f"report: {Path(job.out) / 'report.html'}")
    _write_json(json_path, payload)
    return 0


def cmd_audit(args) -> int:

    job = config_from_args(AuditJob, args)
    json_path = _json_target(args)
    payload = run_audit(job, progress=not args.quiet)
    rows = {
        k: ("skipped: " + v["skipped"]) if isinstance(v, dict) and "skipped" in v else "done"
        for k, v in payload.items()
        if k in DIAGNOSTICS
    }
    _print_summary(f"ponder audit: {job.model}" + (f" vs {job.compare}" if job.compare else ""), rows)
    console.print(f"report: {Path(job.out) / 'report.html'}")
    _write_json(json_path, payload)
    return 0


def cmd_plan(args) -> int:

    job = config_from_args(PlanJob, args)
    json_path = _json_target(args)
    summary = run_plan(
        job, progress=not args.quiet, printer=lambda line: console.print(line, markup=False, highlight=False)
    )
    console.print(
        f"best chain (held-out accuracy {summary['best_heldout_accuracy']:.3f}, {summary['calls']} real calls, "
        f"{summary['rejected']} edits rejected):\n{json.dumps(summary['best_chain'], indent=2)}",
        highlight=False,
    )
    console.print(f"saved {Path(job.out) / 'best_chain.json'} and {summary['report']}")
    _write_json(json_path, summary)
    return 0


def cmd_corpus_build(args) -> int:
    from ponder.jobs.corpus import CorpusJob, run_corpus

    job = config_from_args(CorpusJob, args)
    manifest = run_corpus(job)
    summary = {}
    for name, split in manifest["splits"].items():
        summary[f"{name} documents"] = split["documents"]
        summary[f"{name} characters"] = split["chars"]
        for model, n in split.get("tokens", {}).items():
            summary[f"{name} tokens ({model})"] = n
    summary["sources"] = len(manifest["sources"])
    summary["fingerprint"] = manifest["fingerprint"][:16]
    _print_summary(f"ponder corpus build -> {job.out}", summary)
    console.print(f"train on it with --corpus {Path(job.out) / 'train.jsonl'} (heldout.jsonl is for evaluation)")
    return 0


def cmd_trelawney(args) -> int:

    job = config_from_args(TrelawneyJob, args)
    json_path = _json_target(args)
    summary = run_trelawney(
        job, resume=args.resume, progress=not args.quiet, allow_config_change=args.allow_config_change
    )
    _print_summary(f"ponder trelawney: {job.task} -> {job.out}/final (accuracy with / without the goal span)", summary)
    _write_json(json_path, summary)
    return 0


def cmd_early_experience(args) -> int:

    job = config_from_args(EarlyExperienceJob, args)
    json_path = _json_target(args)
    payload = run_early_experience(
        job, progress=not args.quiet, printer=(lambda _: None) if args.quiet else console.print
    )
    print_table(*early_experience_table(payload), title=f"ponder early-experience on {job.task} (seeds {job.seeds})")
    _write_json(json_path, payload)
    return 0


def cmd_refine(args) -> int:

    job = config_from_args(RefineJob, args)
    json_path = _json_target(args)
    summary = run_refine(job, progress=not args.quiet)
    title = f"ponder refine: {job.task}, {summary['kept']} of {job.n_train} refinements kept -> {job.out}/student/final"
    _print_summary(title, {k: v for k, v in summary.items() if k != "eval"})
    print_eval_table(summary["eval"], title=f"the student on {job.task} (n={job.eval_n}, held out)")
    _write_json(json_path, summary)
    return 0


def cmd_thought_mdp(args) -> int:

    job = config_from_args(ThoughtMDPJob, args)
    json_path = _json_target(args)
    payload = run_thought_mdp(job, progress=(lambda _: None) if args.quiet else console.print)
    print_table(*thought_mdp_summary(payload), title=f"ponder thought-mdp (seeds {job.seeds}, means over seeds)")
    console.print(f"report: {payload['report']}")
    _write_json(json_path, payload)
    return 0


def cmd_export_task(args) -> int:
    from ponder.jobs.lmeval_task import ExportTaskJob, run_export_task

    job = config_from_args(ExportTaskJob, args)
    written = run_export_task(job)
    command = written.get("command") or (
        f"lm_eval --model hf --model_args pretrained=MODEL_DIR{',think_end_token=ID_OF_</think>' if job.mode == 'think' else ''} "
        f"--include_path {job.out} --tasks {written['name']} (--apply_chat_template where ponder uses the chat template)"
    )
    console.print(
        f"wrote {written['problems']} problems to {written['data']} and the task {written['yaml']}\nrun: {command}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    return 0


def cmd_tasks(args) -> int:

    from ponder.data.answers import RULES

    for name in known_tasks():
        print(name + ("  (demo task, default)" if name == DEMO_TASK else ""))
    print("rg:<name>      any reasoning-gym dataset (pip install 'ponder[tasks]')")
    print("path/task.json a BIG-bench task file")
    print("\nanswer rules (the answer is read from what follows the closed thought; ponder eval --answer-rule):")
    print("  built-in and rg: tasks: first_line; BIG-bench files: the file's own (stop_string, then the first")
    print("  match of output_regex, else BIG-bench's default regex [^.?!;\\n]+), scored by the file's metrics")
    for rule, text in RULES.items():
        print(f"  {rule:<14} {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="ponder",
        description="Treat a language model's thoughts as actions: pretrain the built-in tiny model, measure think vs "
        "no-think accuracy, train thinking (RLP against a compute-matched baseline, GRPO and TTRL with "
        "verifier-free rewards), plan reasoning chains in a learned world model, and audit whether thoughts help.",
    )
    parser.add_argument("--version", action="version", version=f"ponder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _add_job(
        sub,
        "base",
        BaseJob,
        cmd_base,
        "pretrain the built-in tiny model on the synthetic corpus",
        "Pretrain the built-in tiny model (a Llama with a char tokenizer) on documents of the demo task, "
        "with and without worked scratchpads, then print its think and no-think accuracy on held-out problems.",
    )
    _add_run_flags(p)

    p = _add_job(
        sub,
        "eval",
        EvalJob,
        cmd_eval,
        "measure a model's accuracy on a task, think and no-think",
        "Accuracy on held-out problems: greedy, and pass@k / maj@k with --k, in think mode "
        "(the model writes a thought first) and no-think mode (thought delimiters banned).",
    )
    _add_run_flags(p, resume=False)

    p = _add_job(
        sub,
        "rlp",
        RLPJob,
        cmd_rlp,
        "RLP: reward thoughts by the information gain they bring to the next token",
        "Reinforcement as a pretraining objective (RLP): at positions of ordinary text the model samples G "
        "thoughts, each rewarded by log p(x_t | x_<t, thought) - log p_EMA(x_t | x_<t); thought tokens are "
        "trained with a clipped surrogate on the group advantage. Checkpoints are Hugging Face models; "
        "rerunning the same command resumes.",
    )
    _add_run_flags(p, json_out=False)

    p = _add_job(
        sub,
        "cpt",
        CPTJob,
        cmd_cpt,
        "continued pretraining (next-token) baseline, compute-matched to an RLP run",
        "Next-token training on the same corpus as RLP. With --match-run RUN the step count is set so the "
        "tokens CPT trains on (after truncation to --max-length) come nearest that RLP run's budget: --match flop "
        "(rollout tokens + input tokens, the paper's T_flop), --match token (input tokens only) or --match compute "
        "(the run's FLOPs / 6 x parameters). The README's compute account says what each counts.",
    )
    _add_run_flags(p, json_out=False)

    p = _add_job(
        sub,
        "grpo",
        GRPOJob,
        cmd_grpo,
        "GRPO on task prompts with any weighted mix of ponder rewards",
        "Group-relative RL: G think-then-answer completions per prompt, rewarded by --reward (a weighted mix, "
        "e.g. verifiable, self_certainty, answer_confidence, answer_likelihood, majority_vote, format, length), "
        "trained with a clipped surrogate on group advantages, optional KL. Equal-reward groups are dropped and "
        "prompts with pass rate 0 set aside to the next epoch (on by default, logged), as are format shares. "
        f"Steps that train nothing are counted and reported; a run in which no step trained writes no model "
        f"and exits {TRAINED_NOTHING_EXIT}.",
    )
    _add_run_flags(p, json_out=False)
    p = _add_job(
        sub,
        "ttrl",
        TTRLJob,
        cmd_grpo,
        "test-time RL: majority-vote rewards on unlabeled prompts",
        "TTRL: n votes per unlabeled prompt (--group-size), each rewarded 1 when its answer is the majority "
        "answer; m of them (--train-samples) are trained on. Logs the majority ratio and, when the problems "
        "have labels, the majority's label accuracy and the reward accuracy. Prompts default to the held-out split. "
        f"A run in which no step trained (every group unanimous) writes no model and exits {TRAINED_NOTHING_EXIT}.",
    )
    _add_run_flags(p, json_out=False)

    p = _add_job(
        sub,
        "demo",
        DemoJob,
        cmd_demo,
        "the main job: base -> RLP -> compute-matched CPT -> eval on the tiny model",
        "Runs the whole RLP story on the built-in tiny model with nothing downloaded: the cached base model, "
        "RLP and FLOP-matched continued pretraining for each seed, then held-out think / no-think accuracy "
        "and information gain for each; prints one table and writes an HTML report.",
    )
    p.add_argument("--quick", action="store_true", help="one seed and small budgets (a few minutes), for smoke checks")
    _add_run_flags(p, resume=False, config_change=True)

    p = _add_job(
        sub,
        "audit",
        AuditJob,
        cmd_audit,
        "thought audit: does thinking help this model, and how?",
        "Nine diagnostics of a model's thoughts on held-out problems: deep-thinking ratio and Think@n vs "
        "self-consistency, information gain per step, on- vs off-policy entropy, reflection after the first "
        "answer, the thinking-budget curve, the validity ablation, update sparsity against --compare and "
        "planning vs execution tokens. Writes OUT/report.html (self-contained) and OUT/audit.json.",
    )
    _add_run_flags(p, resume=False)

    p = _add_job(
        sub,
        "plan",
        PlanJob,
        cmd_plan,
        "Thoughts-as-Planning: optimise a reasoning chain with a world-model planner",
        "Edits a chain (instruction and exemplar lines, a reasoning prefix, the answer format) to raise the "
        "model's score on a task. World-model planners (mppi, gradient, policy) choose edits in a learned "
        "latent model and verify each with one real evaluation; baselines (random, hill, evolution) evaluate "
        "every candidate. Prints the trajectory (edit, predicted, real), saves the best chain and a report.",
    )
    _add_run_flags(p, resume=False)

    p = _add_job(
        sub,
        "thought-mdp",
        ThoughtMDPJob,
        cmd_thought_mdp,
        "thought MDP: does thinking emerge under RL from rich vs poor initial policies?",
        "A gridworld task family whose policy holds one sub-policy per thought state; thought actions switch "
        "sub-policy at a small cost. Policy gradient (exact and sampled) from rich, single-skill and uniform "
        "initial policies and without thought actions; records how often the policy thinks and its return, "
        "sweeps the sub-policy strength, and groups episodes by thinking length. Writes OUT/report.html and "
        "OUT/thought_mdp.json, with the figure as OUT/report.png (seconds to a minute on a CPU).",
    )
    _add_run_flags(p, resume=False)

    p = _add_job(
        sub,
        "early-experience",
        EarlyExperienceJob,
        cmd_early_experience,
        "early experience: imitation vs world-modelling and self-reflection data from the model's own steps",
        "Branches the base policy at every state of expert scratchpads, asks the task's step environment what each "
        "own step leads to, and trains on imitation only, or imitation mixed with implicit world modelling (predict "
        "the observation; world_model_first: the paper's two stages) or with self-reflection (a rule-written "
        "rationale against the own step, then the expert's): same steps and examples per step, no reward. Then a "
        "short GRPO from each; held-out think accuracy before and after. Writes OUT/early_experience.json.",
    )
    _add_run_flags(p, resume=False)

    p = _add_job(
        sub,
        "refine",
        RefineJob,
        cmd_refine,
        "teacher refinements filtered by the student's losses, then next-token training on the selection",
        "A teacher rewrites training problems as its own worked thought and answer; the student scores the "
        "original and the refinement by its per-token loss, a filter rule keeps some refinements, and the student "
        "is trained by next-token prediction on the selection (refinement where kept, original elsewhere), then "
        "evaluated held out. Writes OUT/refinement_table.json, OUT/student/final and OUT/refine_summary.json.",
    )
    _add_run_flags(p, resume=False)

    from ponder.jobs.corpus import CorpusJob

    p = sub.add_parser("corpus", help="build the offline real-text corpus")
    corpus_sub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    p = _add_job(
        corpus_sub,
        "build",
        CorpusJob,
        cmd_corpus_build,
        "build train.jsonl / heldout.jsonl from the prose installed packages ship",
        "Builds a real-text corpus with nothing downloaded: the Python reference topics (pydoc_data), the READMEs "
        "in installed packages' METADATA and the standard library's docstrings, reduced to prose paragraphs (no "
        "code, tables or markup), cut into documents and split into train and held-out by a hash of each source "
        "unit. manifest.json records each source file's package, version and sha256 and a fingerprint.",
    )

    p = _add_job(
        sub,
        "trelawney",
        TrelawneyJob,
        cmd_trelawney,
        "TRELAWNEY: train the tiny model on text with lookahead spans, measure goal-conditioned accuracy",
        "Next-token training of a fresh tiny model on a task's problems, a share of the documents carrying a copy "
        "of a later piece of text between <lookahead> and </lookahead> at an earlier point; then held-out accuracy "
        "with the goal written into such a span after the prompt, and without it (the control). "
        "--lookahead.share 0 is plain next-token training.",
    )
    _add_run_flags(p)

    from ponder.jobs.lmeval_task import ExportTaskJob

    _add_job(
        sub,
        "export-task",
        ExportTaskJob,
        cmd_export_task,
        "write a task's held-out problems and an lm-evaluation-harness task on them",
        "Writes the problems `ponder eval` measures (same --n, --seed) to OUT/NAME.jsonl and an lm-evaluation-harness "
        "task OUT/NAME.yaml (dataset_path: json) that scores them as ponder eval's --mode does: greedy, in think mode "
        "after an opened <think>, the answer's first line trimmed, exact match ignoring case. Check a ponder checkpoint "
        "with the harness: lm_eval --model hf --model_args pretrained=RUN/final,think_end_token=ID --include_path OUT "
        "--tasks NAME (--apply_chat_template where ponder uses the chat template); --model prints that command.",
    )

    p = sub.add_parser("tasks", help="list the built-in tasks")
    p.set_defaults(func=cmd_tasks)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # a flag's own parser (seed ranges) may raise a PonderError
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        check_launch(args.command)
        return args.func(args)
    except PonderError as e:
        console.print(f"[red bold]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return getattr(e, "exit_code", 2)  # 75 (EX_TEMPFAIL) for a temporary condition such as a full disk
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: rerun the same command to resume from the last checkpoint")
        return 130


if __name__ == "__main__":
    sys.exit(main())
