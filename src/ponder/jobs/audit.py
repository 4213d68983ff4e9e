"""``ponder audit``: does this model's thinking help, and how? Nine figures in one report.

Samples ``samples`` thoughts per held-out problem once and reuses them wherever a
diagnostic needs the model's own traces; ``--compare`` adds a second checkpoint (information
gain side by side, off-policy trajectories, update sparsity, planning across checkpoints).
A diagnostic the model cannot support is skipped with the reason (``{"skipped": reason}``
in the JSON, a red line in the report); two checkpoints of different architectures are an
error when sparsity is asked for, raised before any sampling.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from rich.markup import escape

from ponder.audit.budget import budget_accuracies
from ponder.audit.dtr import dtr, dtr_result, lens_token_cap, response_divergences, think_at_n, think_at_n_warning
from ponder.audit.planning import (
    PlanningResult,
    checkpoint_planning,
    lexicon_clusters,
    mine_strategic_ngrams,
    word_entropies_from_tokens,
)
from ponder.audit.policy_entropy import PolicyEntropyResult, continuation_entropy, mean_entropy, perturb
from ponder.audit.reflection import analyse_trace, reflection_result
from ponder.audit.sparsity import check_same_architecture, update_sparsity
from ponder.audit.step_gain import StepGainResult, answer_logliks, summarize_gains
from ponder.audit.validity import validity_accuracy
from ponder.config import SETTINGS
from ponder.data.registry import DEMO_TASK, get_task
from ponder.data.task import thought_budget
from ponder.errors import PonderError
from ponder.lm.delimiters import split_thought
from ponder.lm.lens import LensUnsupported
from ponder.lm.thinking import ThinkSettings, ThoughtFormat, think_then_answer
from ponder.lm.tokens import decode_with_offsets
from ponder.models.lookup import load_model
from ponder.progress import console, make_progress
from ponder.report.audit_report import write_report
from ponder.train.rundir import open_run

Diagnostic = Literal[
    "dtr",
    "think_at_n",
    "step_information_gain",
    "policy_entropy",
    "reflection",
    "budget_curve",
    "validity",
    "sparsity",
    "planning_tokens",
]
DIAGNOSTICS: tuple[str, ...] = Diagnostic.__args__  # type: ignore[attr-defined]


class AuditJob(ThinkSettings, BaseModel):
    """Settings of ``ponder audit`` (the thought format: :class:`~ponder.lm.thinking.ThinkSettings`, as every
    job that samples)."""

    model_config = SETTINGS
    model: str = Field(
        "tiny",
        description="tiny, tiny-lazy, smollm2-135m, a random-init shape (smollm2-135m-shape, qwen3-0.6b-shape[:LAYERS]), a HF model directory or a .gguf file",
    )
    task: str = Field(DEMO_TASK, description="task whose held-out problems are audited")
    compare: str | None = Field(
        None,
        description="a second checkpoint (e.g. an RLP run's final/): step gain, off-policy entropy, sparsity, planning",
    )
    second_run: str | None = Field(
        None, description="another run from the same base as --compare: overlap of the updated sets"
    )
    checkpoints: list[str] = Field(
        default_factory=list, description="further checkpoints for the planning-token series (after model, compare)"
    )
    n: int = Field(16, ge=1, description="held-out problems")
    samples: int = Field(4, ge=2, description="samples per problem (the n of Think@n and self-consistency)")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the audited traces")
    max_thought_tokens: int | None = Field(None, ge=1, description="thought budget (default: from the task, else 128)")
    max_answer_tokens: int = Field(16, ge=1, description="answer budget")
    prefix_tokens: int = Field(
        50, ge=1, description="Think@n ranks samples by the DTR of this many first thought tokens"
    )
    dtr_max_tokens: int | None = Field(
        None,
        ge=1,
        description="DTR over at most this many first thought tokens (the lens, which costs layers x vocab per token, "
        "then covers these and Think@n's prefix; default all)",
    )
    max_steps: int = Field(
        16, ge=1, description="step information gain: longer thoughts have consecutive steps merged into this many"
    )
    g: float = Field(0.5, description="DTR settling threshold on the JSD")
    rho: float = Field(0.85, gt=0, lt=1, description="DTR depth fraction")
    depth_rule: Literal["paper", "research"] = Field(
        "paper", description="deep if c_t >= ceil(rho L) (paper) or ceil((1-rho) L) (RESEARCH.md wording)"
    )
    log_base: float = Field(2.0, gt=1, description="log base of the JSD (2: values in [0, 1])")
    budgets: list[int] | None = Field(
        None, description="thought budgets of the budget curve (default: 1/8 .. 2x the thought budget)"
    )
    force_text: str = Field("Wait", description="text put in place of an early end-of-thought when forcing")
    exemplars: int = Field(3, ge=1, description="few-shot exemplars of the validity ablation")
    perturb_fraction: float = Field(
        0.1, gt=0, le=1, description="share of own-trajectory tokens replaced for the off-policy entropy"
    )
    sparsity_tol: float = Field(1e-5, ge=0, description="|delta| above this counts as updated")
    planning_lexicon: list[str] | None = Field(
        None, description="strategic phrases (phrase or phrase=cluster); default: mined from successful traces"
    )
    diagnostics: list[str] = Field(list(DIAGNOSTICS), description="which diagnostics to run")
    out: str = Field("runs/audit", description="output directory (report.html, audit.json)")
    seed: int = Field(0, description="seed of the problem draw and of sampling")
    batch_size: int = Field(32, ge=1, description="prompts per generation / scoring batch")
    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda when available)")


@dataclass
class Traces:
    """``M = problems * n`` sampled think-mode completions of one model, grouped by problem; ids as sampled."""

    n: int
    thoughts: list[str]
    answers: list[str]
    texts: list[str]
    context_ids: list[list[int]]  # prompt + <think>
    thought_ids: list[list[int]]
    lengths: list[int]  # thought + answer tokens
    extracted: list[str | None]
    scores: list[float]

    def first(self) -> list[int]:
        return list(range(0, len(self.thoughts), self.n))


def sample_traces(lm, task, problems, job: AuditJob, n: int, budget: int, seed: int) -> Traces:
    """``n`` think-mode completions per problem through the one sampler; every later figure reads their ids."""
    tok = lm.tokenizer
    fmt = ThoughtFormat.of(lm.model, tok, ThinkSettings.of(job))
    gen = torch.Generator(device=lm.device).manual_seed(seed)
    prompt_ids = fmt.prompt_ids(tok, [p.prompt for p in problems])
    c = think_then_answer(
        lm.model,
        tok,
        fmt,
        prompt_ids,
        n=n,
        temperature=job.temperature,
        max_thought_tokens=budget,
        max_answer_tokens=job.max_answer_tokens,
        generator=gen,
        batch_size=job.batch_size,
    )
    rows = [int(i) for i in c.prompt_index]
    texts = c.texts(tok)
    thoughts = [split_thought(t)[0] or "" for t in texts]
    answers = [split_thought(t)[1] for t in texts]
    return Traces(
        n=n,
        thoughts=thoughts,
        answers=answers,
        texts=texts,
        context_ids=[prompt_ids[i] + [fmt.open_id] for i in rows],
        thought_ids=[list(t) for t in c.thoughts.ids],
        lengths=[int(a) + int(b) for a, b in zip(c.thought_tokens, c.answer_tokens)],
        extracted=[task.extract_answer(t) for t in texts],
        scores=[task.score(problems[i], t) for i, t in zip(rows, texts)],
    )


class _Audit:
    """Runs the diagnostics of one job; each ``run_<key>`` returns a result with ``to_json``."""

    def __init__(self, job: AuditJob, progress: bool):

        self.job = job
        unknown = sorted(set(job.diagnostics) - set(DIAGNOSTICS))
        if unknown:
            raise PonderError(f"unknown diagnostics {unknown}; choose from {', '.join(DIAGNOSTICS)}")
        self.progress = progress
        self.task = get_task(job.task)
        self.budget = job.max_thought_tokens or (thought_budget(self.task) if hasattr(self.task, "sample") else 128)
        self.problems = self.task.problems(job.n, seed=job.seed, split="test")
        if not self.problems:
            raise PonderError(f"task {job.task} has no held-out problems")
        self.lm = load_model(job.model, device=job.device, think_settings=job)
        self.other = load_model(job.compare, device=job.device, think_settings=job) if job.compare else None
        self._traces: dict[str, Traces] = {}

    def wants(self, key: str) -> bool:
        return key in self.job.diagnostics

    def traces(self, name: str, lm) -> Traces:
        if name not in self._traces:
            self._traces[name] = sample_traces(
                lm, self.task, self.problems, self.job, self.job.samples, self.budget, self.job.seed
            )
        return self._traces[name]

    # ------------------------------------------------------------ 1. DTR and Think@n

    def run_dtr_and_think(self):

        j, tr = self.job, self.traces("model", self.lm)
        cap = lens_token_cap(j.dtr_max_tokens, j.prefix_tokens)
        thought_ids = [ids[:cap] for ids in tr.thought_ids]
        divs = response_divergences(
            self.lm.model,
            self.lm.tokenizer,
            tr.context_ids,
            thought_ids,
            base=j.log_base,
            batch_size=max(1, j.batch_size // 4),
        )
        correct = [s >= 1 for s in tr.scores]
        result = dtr_result(divs, correct, j.g, j.rho, j.depth_rule, j.log_base, max_tokens=j.dtr_max_tokens)
        groups = []
        for k, p in enumerate(self.problems):
            rows = range(k * tr.n, (k + 1) * tr.n)
            groups.append(
                {
                    "answers": [tr.extracted[i] for i in rows],
                    "prefix_dtr": [dtr(divs[i][:, : j.prefix_tokens], j.g, j.rho, j.depth_rule) for i in rows],
                    "lengths": [tr.lengths[i] for i in rows],
                    "score": (lambda a, p=p: self.task.score(p, a)),
                }
            )
        tn = think_at_n(groups, prefix=j.prefix_tokens).to_json()
        warning = think_at_n_warning(j.prefix_tokens, self.budget, tn["token_ratio"])
        return result, {**tn, "thought_budget": self.budget, "warnings": [warning] if warning else []}

    # ------------------------------------------------------------ 2. information gain per step

    def run_step_information_gain(self):

        per_model = {}
        for name, lm in self._models():
            tr = self.traces(name, lm)
            lls, correct = [], []
            for k, i in enumerate(tr.first()):
                p = self.problems[k]
                prompt_ids = tr.context_ids[i][:-1]  # the sampled thought's own context, without <think>
                lls.append(
                    answer_logliks(
                        lm.model,
                        lm.tokenizer,
                        prompt_ids,
                        tr.thought_ids[i],
                        p.answer,
                        self.job.batch_size,
                        self.job.max_steps,
                    )
                )
                correct.append(tr.scores[i] >= 1)
            per_model[self._label(name)] = summarize_gains(lls, correct)
        return StepGainResult(per_model)

    # ------------------------------------------------------------ 3. policy entropy

    def run_policy_entropy(self):

        lm, tr = self.lm, self.traces("model", self.lm)
        rows = tr.first()
        ctx = [tr.context_ids[i] for i in rows]
        own = [tr.thought_ids[i] for i in rows]
        on = mean_entropy(continuation_entropy(lm.model, lm.tokenizer, ctx, own, self.job.batch_size))
        off = {}
        rng = random.Random(self.job.seed)
        pool = sorted({t for ids in own for t in ids})
        noisy = [perturb(ids, self.job.perturb_fraction, pool, rng)[0] for ids in own]
        off[f"own, {self.job.perturb_fraction:.0%} tokens perturbed"] = mean_entropy(
            continuation_entropy(lm.model, lm.tokenizer, ctx, noisy, self.job.batch_size)
        )
        if self.other is not None:
            theirs = self.traces("compare", self.other)
            if lm.tokenizer.get_vocab() == self.other.tokenizer.get_vocab():  # the same ids mean the same tokens
                foreign = [theirs.thought_ids[i] for i in theirs.first()]
            else:  # another tokenizer: its text is all the two models share
                foreign = [
                    lm.tokenizer(theirs.thoughts[i], add_special_tokens=False)["input_ids"] for i in theirs.first()
                ]
            off["from --compare"] = mean_entropy(
                continuation_entropy(lm.model, lm.tokenizer, ctx, foreign, self.job.batch_size)
            )
        return PolicyEntropyResult(
            on_policy=on, off_policy=off, trajectories=len(rows), perturb_fraction=self.job.perturb_fraction
        )

    # ------------------------------------------------------------ 4. reflection

    def run_reflection(self):

        tr, tok = self.traces("model", self.lm), self.lm.tokenizer
        analyses, texts, rights = [], [], []
        for i, (thought, answer) in enumerate(zip(tr.thoughts, tr.answers)):
            p = self.problems[i // tr.n]

            def right(a, p=p):
                return self.task.score(p, a) >= 1

            analyses.append(analyse_trace(thought, answer, tr.extracted[i], right))
            texts.append(thought + answer)
            rights.append(right)
        return reflection_result(
            analyses, texts, rights, count_tokens=lambda s: len(tok(s, add_special_tokens=False)["input_ids"])
        )

    # ------------------------------------------------------------ 5. budget curve

    def budgets(self) -> list[int]:
        if self.job.budgets:
            return sorted(set(self.job.budgets))
        b = self.budget
        return sorted({max(1, b // 8), max(1, b // 4), max(1, b // 2), max(1, 3 * b // 4), b, 2 * b})

    def run_budget_curve(self):

        lm, j = self.lm, self.job
        return budget_accuracies(
            lm.model,
            lm.tokenizer,
            self.task,
            self.problems,
            self.budgets(),
            j.force_text,
            max_answer_tokens=j.max_answer_tokens,
            batch_size=j.batch_size,
            think_settings=ThinkSettings.of(j),
        )

    # ------------------------------------------------------------ 6. validity

    def run_validity(self):

        pool = self.task.problems(4 * self.job.exemplars + 8, seed=self.job.seed + 1, split="train")
        exemplars = [p for p in pool if p.thought][: self.job.exemplars]
        if len(exemplars) < self.job.exemplars:
            return {"skipped": f"task {self.job.task} has no worked thoughts to build exemplars from"}
        return validity_accuracy(
            self.lm.model,
            self.lm.tokenizer,
            self.task,
            exemplars,
            self.problems,
            self.budget,
            self.job.max_answer_tokens,
            self.job.seed,
            self.job.batch_size,
            ThinkSettings.of(self.job),
        )

    # ------------------------------------------------------------ 7. sparsity

    def run_sparsity(self):

        if self.other is None:
            return {"skipped": "needs a second checkpoint: pass --compare"}
        second = None
        if self.job.second_run:
            second = load_model(self.job.second_run, device="cpu").model.state_dict()
        return update_sparsity(
            self._state(self.lm),
            self._state(self.other),
            self.job.sparsity_tol,
            other=second,
            names=(self.job.model, self.job.compare),
        )

    @staticmethod
    def _state(lm) -> dict:
        return {k: v.detach().cpu() for k, v in lm.model.state_dict().items()}

    def check_sparsity_inputs(self) -> None:

        if self.wants("sparsity") and self.other is not None:
            check_same_architecture(
                self.lm.model.state_dict(), self.other.model.state_dict(), (self.job.model, str(self.job.compare))
            )

    # ------------------------------------------------------------ 8. planning tokens

    def run_planning_tokens(self):

        series = list(self._models()) + [(c, load_model(c, device=self.job.device)) for c in self.job.checkpoints]
        traces = {name: self.traces(name, lm) for name, lm in series}
        if self.job.planning_lexicon:
            strategic, source = lexicon_clusters(self.job.planning_lexicon), "lexicon"
        else:
            won = [t for tr in traces.values() for t, s in zip(tr.thoughts, tr.scores) if s >= 1]
            strategic, source = (
                mine_strategic_ngrams(won),
                "mined from successful traces (3-5-grams, top 20% by document frequency)",
            )
        points = []
        for name, lm in series:
            tr = traces[name]
            word_ent = None
            ents = continuation_entropy(
                lm.model, lm.tokenizer, tr.context_ids, tr.thought_ids, self.job.batch_size, skip_first=False
            )
            decoded = [decode_with_offsets(lm.tokenizer, ids) for ids in tr.thought_ids]
            word_ent = [word_entropies_from_tokens(text, offsets, h) for (text, offsets), h in zip(decoded, ents)]
            points.append(checkpoint_planning(self._label(name), tr.thoughts, tr.answers, strategic, word_ent))
        return PlanningResult(source=source, strategic_ngrams=len(strategic), checkpoints=points)

    # ------------------------------------------------------------ plumbing

    def _models(self):
        yield "model", self.lm
        if self.other is not None:
            yield "compare", self.other

    def _label(self, name: str) -> str:
        if name == "compare" and self.job.compare == self.job.model:  # a model against itself: two rows, not one
            return f"{self.job.compare} (--compare)"
        return {"model": self.job.model, "compare": str(self.job.compare)}.get(name, name)


def run_audit(job: AuditJob, progress: bool = True) -> dict:
    """Run the chosen diagnostics; write ``out/audit.json`` and ``out/report.html``; return the JSON."""

    with open_run(job.out, "audit", job) as out:
        return _run_audit(job, out, progress)


def _run_audit(job: AuditJob, out: Path, progress: bool) -> dict:

    audit = _Audit(job, progress)
    audit.check_sparsity_inputs()
    results: dict = {}
    seconds: dict[str, float] = {}
    steps = [k for k in DIAGNOSTICS if audit.wants(k)]
    with make_progress(progress) as bar:
        task_id = bar.add_task("ponder audit", total=len(steps))
        for key in steps:
            bar.update(task_id, description=f"audit: {key}")
            if key in results:
                bar.advance(task_id)
                continue
            start = time.time()
            try:
                if key in ("dtr", "think_at_n"):
                    dtr_res, tn = audit.run_dtr_and_think()
                    results["dtr"], results["think_at_n"] = dtr_res.to_json(), tn
                    for warning in tn["warnings"]:
                        console.print(f"[yellow bold]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
                else:
                    res = getattr(audit, f"run_{key}")()
                    results[key] = res if isinstance(res, dict) else res.to_json()
            except LensUnsupported as e:
                reason = f"the model gives no hidden-state access for the logit lens: {e}"
                results["dtr"] = results["think_at_n"] = {"skipped": reason}
            seconds[key] = round(time.time() - start, 1)
            if progress:
                console.print(f"audit: {key} took {seconds[key]:.0f} s")
            bar.advance(task_id)
    for key in DIAGNOSTICS:
        results.setdefault(key, {"skipped": "not requested (--diagnostics)"})
    payload = {
        "model": job.model,
        "compare": job.compare,
        "task": job.task,
        "problems": len(audit.problems),
        "samples": job.samples,
        "thought_budget": audit.budget,
        "seconds": seconds,
        "config": job.model_dump(mode="json"),
        **results,
    }
    payload = finite(payload)
    (out / "audit.json").write_text(json.dumps(payload, indent=2, allow_nan=False))
    write_report(payload, out / "report.html")
    return payload


def finite(obj):
    """NaN and infinities -> None, so the JSON is strict (no NaN literals)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
