"""Edits of a reasoning chain at three scales, and the payload vocabulary they draw from.

* token scale: ``insert_word`` / ``delete_word`` / ``replace_word`` in any line of the chain;
* step scale: ``reorder`` (swap two steps), ``split`` (cut a step before a word), ``merge``
  (join a step with the next), ``delete_step``, ``insert_step`` and ``rewrite_step`` (new text
  sampled from the LM or mined from the task's worked thoughts);
* instruction scale: ``add`` / ``replace`` / ``remove`` an instruction line or an exemplar,
  ``set_format`` (change the answer format) and ``bootstrap_demo`` (a training problem with its
  reference answer, in the direct form "8+7=15", replaces an exemplar or is appended: the
  demonstrations DSPy's bootstrapping optimizers propose, as one edit).

:func:`apply_edit` is pure (text in, text out) and raises :class:`EditRejected` for an edit
that does not apply: an index out of range, a no-op, or a result with an empty line.
Payloads come from a :class:`Vocabulary` mined from the task's training problems
(:func:`mine_vocabulary`) and extended with LM proposals (``PlanEnv.propose``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace

from ponder.plan.state import FORMATS, LINE_FIELDS, Chain, distinct, render_prompt

SCALES = ("token", "step", "instruction")
OPS = {
    "token": ("insert_word", "delete_word", "replace_word"),
    "step": ("reorder", "split", "merge", "delete_step", "insert_step", "rewrite_step"),
    "instruction": (
        "add_instruction",
        "replace_instruction",
        "remove_instruction",
        "add_exemplar",
        "replace_exemplar",
        "remove_exemplar",
        "set_format",
        "bootstrap_demo",
    ),
}
ALL_OPS = tuple(op for ops in OPS.values() for op in ops)
SCALE_OF = {op: scale for scale, ops in OPS.items() for op in ops}


class EditRejected(ValueError):
    """An edit that does not apply to a chain (out of range, no-op, empty result, too long)."""


@dataclass(frozen=True)
class Edit:
    """One edit. ``field`` is a chain field (token scale), ``index`` the line or step,
    ``pos`` a word position or a second step index, ``payload`` the new text (word, line,
    step or format name)."""

    op: str
    field: str = ""
    index: int = 0
    pos: int = 0
    payload: str = ""

    def __post_init__(self):
        if self.op not in SCALE_OF:
            raise ValueError(f"unknown edit op {self.op!r}; known: {ALL_OPS}")

    @property
    def scale(self) -> str:
        return SCALE_OF[self.op]

    def describe(self) -> str:
        where = f"{self.field}[{self.index}]" if self.field else f"[{self.index}]"
        extra = f" @{self.pos}" if self.op in ("insert_word", "delete_word", "replace_word", "split", "reorder") else ""
        pay = f" {self.payload!r}" if self.payload else ""
        return f"{self.scale}:{self.op} {where}{extra}{pay}"

    def content(self, chain: Chain | None = None) -> str:
        """The text the edit embedding reads: operation, payload and the text it touches."""
        touched = ""
        if chain is not None:
            lines = chain.lines(_field_of(self)) if _field_of(self) else ()
            if 0 <= self.index < len(lines):
                touched = lines[self.index]
                if self.op in ("delete_word", "replace_word"):
                    words = touched.split()
                    touched = words[self.pos] if 0 <= self.pos < len(words) else touched
            elif self.op == "set_format":
                touched = chain.answer_format
        return f"{self.op.replace('_', ' ')} {self.payload} | {touched}".strip()

    def to_json(self) -> dict:
        return {"op": self.op, "field": self.field, "index": self.index, "pos": self.pos, "payload": self.payload}


def _field_of(edit: Edit) -> str:
    if edit.scale == "token":
        return edit.field
    if edit.scale == "step":
        return "steps"
    if "instruction" in edit.op:
        return "instructions"
    if "exemplar" in edit.op or edit.op == "bootstrap_demo":
        return "exemplars"
    return ""


def _check_index(lines, i: int, op: str) -> None:
    if not 0 <= i < len(lines):
        raise EditRejected(f"{op}: index {i} out of range for {len(lines)} lines")


def _nonempty(text: str, op: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise EditRejected(f"{op}: the result would be an empty line")
    return text


def apply_edit(chain: Chain, edit: Edit) -> Chain:
    """The chain after ``edit``; raises :class:`EditRejected` when it does not apply or changes nothing."""
    op = edit.op
    new = _apply(chain, edit)
    if new == chain:
        raise EditRejected(f"{op}: no change")
    return new


def _apply(chain: Chain, e: Edit) -> Chain:
    op = e.op
    if e.scale == "token":
        if e.field not in LINE_FIELDS:
            raise EditRejected(f"{op}: field must be one of {LINE_FIELDS}, got {e.field!r}")
        lines = list(chain.lines(e.field))
        _check_index(lines, e.index, op)
        words = lines[e.index].split()
        if op == "insert_word":
            if not 0 <= e.pos <= len(words):
                raise EditRejected(f"{op}: position {e.pos} out of range")
            words.insert(e.pos, _nonempty(e.payload, op))
        else:
            if not 0 <= e.pos < len(words):
                raise EditRejected(f"{op}: position {e.pos} out of range")
            if op == "delete_word":
                del words[e.pos]
            else:
                words[e.pos] = _nonempty(e.payload, op)
        lines[e.index] = _nonempty(" ".join(words), op)
        return chain.with_lines(e.field, lines)
    if e.scale == "step":
        steps = list(chain.steps)
        if op == "insert_step":
            if not 0 <= e.index <= len(steps):
                raise EditRejected(f"{op}: index {e.index} out of range")
            steps.insert(e.index, _nonempty(e.payload, op))
            return chain.with_lines("steps", steps)
        _check_index(steps, e.index, op)
        if op == "reorder":
            _check_index(steps, e.pos, op)
            steps[e.index], steps[e.pos] = steps[e.pos], steps[e.index]
        elif op == "split":
            words = steps[e.index].split()
            if not 0 < e.pos < len(words):
                raise EditRejected(f"{op}: a step of {len(words)} words cannot be split before word {e.pos}")
            steps[e.index : e.index + 1] = [" ".join(words[: e.pos]), " ".join(words[e.pos :])]
        elif op == "merge":
            _check_index(steps, e.index + 1, op)
            steps[e.index : e.index + 2] = [steps[e.index] + " " + steps[e.index + 1]]
        elif op == "delete_step":
            del steps[e.index]
        else:  # rewrite_step
            steps[e.index] = _nonempty(e.payload, op)
        return chain.with_lines("steps", steps)
    if op == "set_format":
        if e.payload not in FORMATS:
            raise EditRejected(f"{op}: unknown format {e.payload!r}; known: {FORMATS}")
        return replace(chain, answer_format=e.payload)
    field_name = _field_of(e)
    lines = list(chain.lines(field_name))
    if op == "bootstrap_demo":  # replace exemplar `index`, or append one at index len(exemplars)
        if not 0 <= e.index <= len(lines):
            raise EditRejected(f"{op}: index {e.index} out of range")
        lines[e.index : e.index + 1] = [_nonempty(e.payload, op)]
    elif op.startswith("add_"):
        if not 0 <= e.index <= len(lines):
            raise EditRejected(f"{op}: index {e.index} out of range")
        lines.insert(e.index, _nonempty(e.payload, op))
    elif op.startswith("replace_"):
        _check_index(lines, e.index, op)
        lines[e.index] = _nonempty(e.payload, op)
    else:  # remove_
        _check_index(lines, e.index, op)
        del lines[e.index]
    return chain.with_lines(field_name, lines)


# ---------------------------------------------------------------- vocabulary

#: Generic instruction lines to start from; the LM's proposals and the mined words extend them.
SEED_INSTRUCTIONS = (
    "Think step by step.",
    "Answer with the final result only.",
    "Work one step at a time and check each step.",
    "Write the answer on one line.",
)


@dataclass
class Vocabulary:
    """Payloads for edits: words, instruction lines, exemplars, reasoning steps, formats, and ``demos``:
    training problems with their reference answers in the direct form (``bootstrap_demo``'s payloads)."""

    words: list[str] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    exemplars: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    formats: tuple[str, ...] = FORMATS
    demos: list[str] = field(default_factory=list)

    def extend(self, **lists) -> Vocabulary:
        for name, items in lists.items():
            pool = getattr(self, name)
            for item in items:
                item = " ".join(str(item).split())
                if item and item not in pool:
                    pool.append(item)
        return self

    def sizes(self) -> dict:
        return {k: len(getattr(self, k)) for k in ("words", "instructions", "exemplars", "steps", "formats", "demos")}


def _step_chunks(thought: str) -> list[str]:
    """Steps of a worked thought: its space-separated chunks, re-joined at keyword-led words."""
    chunks: list[str] = []
    for word in thought.split():
        if chunks and re.fullmatch(r"[A-Za-z]+|[\d,]+", word) and not re.search(r"[=+*-]", chunks[-1].split()[-1]):
            chunks[-1] += " " + word  # "min 1 rest 5,3" stays one step
        else:
            chunks.append(word)
    return chunks


def direct_demo(problem) -> str:
    """A solved problem in the direct form: its input followed by its reference answer ("8+7=" + "15")."""
    return " ".join((problem.prompt + problem.answer).split())


def mining_pool(task, n: int = 64, seed: int = 0, exclude: Collection[str] = ()) -> list:
    """The distinct training problems of ``task`` (``n`` drawn with ``seed``) whose prompt is not in ``exclude``.

    ``exclude``: the prompts a planning environment evaluates chains on. A solved exemplar, a worked step or a
    demonstration of an evaluated input scores that input by copying: the training value then rewards
    memorising the minibatch, which no held-out problem repays (issue 28: before, add1's and add2's mined
    exemplars were the minibatch's own problems, 8 of 8).
    """
    skip = set(exclude)
    return [p for p in distinct(task.problems(n, seed=seed, split="train")) if p.prompt not in skip]


def mine_vocabulary(
    task,
    n: int = 64,
    seed: int = 0,
    n_words: int = 40,
    n_exemplars: int = 8,
    n_demos: int = 8,
    exclude: Collection[str] = (),
) -> Vocabulary:
    """Payloads mined from the training problems of :func:`mining_pool` (``n`` drawn, the ``exclude`` prompts left out).

    Words: the most frequent whitespace tokens of prompts, answers and thoughts (and of the
    seed instructions); exemplars: the first ``n_exemplars`` solved problems rendered in each answer
    format; steps: the steps of the worked thoughts; demos: the last ``n_demos`` problems in the direct
    form. Training problems only, never the test split, and never an input in ``exclude`` (give the
    prompts the planning environment evaluates: :func:`ponder.jobs.plan.build_vocabulary` does).
    """

    problems = mining_pool(task, n, seed, exclude)
    counts: Counter = Counter()
    for p in problems:
        counts.update(p.prompt.split() + p.answer.split() + (p.thought or "").split())
    for line in SEED_INSTRUCTIONS:
        counts.update(line.split())
    vocab = Vocabulary(words=[w for w, _ in counts.most_common(n_words)], instructions=list(SEED_INSTRUCTIONS))
    exemplars, steps = [], []
    for p in problems[:n_exemplars]:
        exemplars.append(p.prompt + p.answer)
        if p.thought:
            exemplars.append(render_prompt(Chain(steps=(p.thought,), answer_format="direct"), p.prompt) + p.answer)
        exemplars.append(f"Q: {p.prompt} A: {p.answer}")
    for p in problems:
        steps += _step_chunks(p.thought or "")
    demos = [direct_demo(p) for p in problems[max(0, len(problems) - n_demos) :] if p.answer not in (None, "")]
    return vocab.extend(exemplars=exemplars, steps=[s for s, _ in Counter(steps).most_common(3 * n_words)], demos=demos)


# ---------------------------------------------------------------- candidates


def enumerate_edits(
    chain: Chain, vocab: Vocabulary, rng: random.Random, samples_per_op: int = 2, scales: tuple[str, ...] = SCALES
) -> list[Edit]:
    """Edits of ``chain``: every structural edit (deletes, removals, merges, swaps of
    neighbours, format changes) and ``samples_per_op`` random payload edits per operation."""
    out: list[Edit] = []
    steps = chain.steps

    def pick(pool):
        return rng.choice(pool) if pool else ""

    if "token" in scales:
        for fld in LINE_FIELDS:
            lines = chain.lines(fld)
            for i, line in enumerate(lines):
                words = line.split()
                out += [Edit("delete_word", fld, i, p) for p in range(len(words))]
            for _ in range(samples_per_op if lines else 0):
                i = rng.randrange(len(lines))
                nw = len(lines[i].split())
                out.append(Edit("insert_word", fld, i, rng.randint(0, nw), pick(vocab.words)))
                out.append(Edit("replace_word", fld, i, rng.randrange(nw), pick(vocab.words)))
    if "step" in scales:
        out += [Edit("delete_step", index=i) for i in range(len(steps))]
        out += [Edit("merge", index=i) for i in range(len(steps) - 1)]
        out += [Edit("reorder", index=i, pos=i + 1) for i in range(len(steps) - 1)]
        for i, s in enumerate(steps):
            nw = len(s.split())
            if nw > 1:
                out.append(Edit("split", index=i, pos=rng.randint(1, nw - 1)))
        for _ in range(samples_per_op):
            out.append(Edit("insert_step", index=rng.randint(0, len(steps)), payload=pick(vocab.steps)))
            if steps:
                out.append(Edit("rewrite_step", index=rng.randrange(len(steps)), payload=pick(vocab.steps)))
    if "instruction" in scales:
        out += [Edit("set_format", payload=f) for f in vocab.formats if f != chain.answer_format]
        out += [Edit("remove_instruction", index=i) for i in range(len(chain.instructions))]
        out += [Edit("remove_exemplar", index=i) for i in range(len(chain.exemplars))]
        for _ in range(samples_per_op):
            out.append(
                Edit("add_instruction", index=rng.randint(0, len(chain.instructions)), payload=pick(vocab.instructions))
            )
            out.append(Edit("add_exemplar", index=rng.randint(0, len(chain.exemplars)), payload=pick(vocab.exemplars)))
            if chain.instructions:
                out.append(
                    Edit(
                        "replace_instruction",
                        index=rng.randrange(len(chain.instructions)),
                        payload=pick(vocab.instructions),
                    )
                )
            if chain.exemplars:
                out.append(
                    Edit("replace_exemplar", index=rng.randrange(len(chain.exemplars)), payload=pick(vocab.exemplars))
                )
            if vocab.demos:
                out.append(
                    Edit("bootstrap_demo", index=rng.randint(0, len(chain.exemplars)), payload=pick(vocab.demos))
                )
    return out


def candidate_edits(
    chain: Chain,
    vocab: Vocabulary,
    rng: random.Random,
    max_candidates: int = 48,
    accept: Callable[[Chain], bool] | None = None,
    scales: tuple[str, ...] = SCALES,
    samples_per_op: int = 2,
) -> list[tuple[Edit, Chain]]:
    """Up to ``max_candidates`` distinct ``(edit, resulting chain)`` pairs, drawn evenly across operations.

    Edits that are rejected or lead to the same chain as an earlier one are dropped;
    ``accept(chain)`` (e.g. the environment's length check) filters the results.
    """
    seen, out = {chain.key()}, []
    by_op: dict[str, list[Edit]] = {}
    for e in enumerate_edits(chain, vocab, rng, samples_per_op, scales):
        by_op.setdefault(e.op, []).append(e)
    for pool in by_op.values():
        rng.shuffle(pool)
    # Round-robin over operations (stratified), so edits with many instances (one per word)
    # do not crowd out the few structural ones.
    while by_op and len(out) < max_candidates:
        for op in rng.sample(sorted(by_op), len(by_op)):
            e = by_op[op].pop()
            if not by_op[op]:
                del by_op[op]
            try:
                new = apply_edit(chain, e)
            except EditRejected:
                continue
            if new.key() in seen or (accept is not None and not accept(new)):
                continue
            seen.add(new.key())
            out.append((e, new))
            if len(out) >= max_candidates:
                break
    return out
