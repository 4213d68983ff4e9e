"""Which thought format can SmolLM2-135M read? Each delimiter option measured on held-out text and on tasks (issue 27).

SmolLM2 has no thinking tokens. The options, all with the chat template's structure tokens banned
inside a thought (``<|im_start|>``, ``<|im_end|>``...; the first row is the format before issue 27):

* ``mean-noban``: new ``<think>``/``</think>`` tokens at the vocabulary's mean embedding, only EOS
  and ``<think>`` banned inside a thought (the old format);
* ``mean``: the same tokens, structure tokens banned;
* ``phrase``: new tokens whose (tied) embeddings start at the mean embedding of a phrase's tokens
  (``--open-phrase``, ``--close-phrase``);
* ``text``: plain-text delimiters, ordinary token sequences: the thought opens with the open
  phrase's tokens and closes when the model writes the close phrase (a stop string; the tokens the
  model wrote are kept as its close), or at the budget, where the close phrase's tokens are appended.

On held-out windows of the real-text corpus (RLP's setting, the positions of
``bench/rlp_smollm2_diagnose.py``): the next token's log-prob after an empty thought and after ``G``
sampled thoughts, minus its log-prob without a thought (nats; the cost of the format and of a
thought), and the share of sampled thoughts that closed. On tasks (chat prompts, greedy): the share
of thoughts the model closed, think-mode accuracy and thought length; no-think accuracy once::

    OMP_NUM_THREADS=1 python bench/thought_format_smollm2.py --corpus /tmp/realtext \\
        --json bench/results/thought_format_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))

from ponder.data.registry import get_task  # noqa: E402
from ponder.lm.decode import DecodeRules, sample  # noqa: E402
from ponder.lm.delimiters import init_rows, phrase_ids, think_token_ids  # noqa: E402
from ponder.lm.padding import pad_id_of  # noqa: E402
from ponder.lm.thinking import ANSWER_STOPS, CLOSE_PHRASE, OPEN_PHRASE, ThinkSettings, ThoughtFormat  # noqa: E402
from ponder.models.lookup import load_model  # noqa: E402
from ponder.rl.positions import keyed_generators  # noqa: E402
from rlp_smollm2 import MODEL, heldout_windows  # noqa: E402  (a sibling script, not a package)
from rlp_smollm2_diagnose import choose, last_token_logprobs  # noqa: E402

OPTIONS = ("mean-noban", "mean", "phrase", "text")
BB_FILE = "/tmp/bb/bigbench-1.0.0/bigbench/benchmark_tasks/object_counting/task.json"


class Option:
    """One delimiter option: the ids that open and close a thought, and the thought phase's rules."""

    def __init__(self, name: str, lm, open_phrase: str, close_phrase: str, vocab_rows: int):
        self.name, tok, model = name, lm.tokenizer, lm.model
        think_open, think_close = think_token_ids(tok)
        base = ThoughtFormat.of(model, tok, ThinkSettings(chat_template="on"))
        self.fmt = base
        if name in ("mean", "mean-noban"):
            init_rows(model, [think_open, think_close], [None, None], vocab_rows)
        elif name == "phrase":
            init_rows(
                model, [think_open, think_close], [phrase_ids(tok, open_phrase), phrase_ids(tok, close_phrase)], 0
            )
        if name == "text":
            self.open_ids = phrase_ids(tok, open_phrase)
            self.close_ids = phrase_ids(tok, " " + close_phrase.strip())
            rules = base.thought_rules()
            self.rules = DecodeRules(ban_ids=(*rules.ban_ids, think_close), stop_strings=(close_phrase.strip(),))
        else:
            self.open_ids, self.close_ids = [think_open], [think_close]
            rules = base.thought_rules()
            if name == "mean-noban":
                rules = DecodeRules(rules.end_ids, (think_open, *base.eos_ids), rules.min_new_tokens)
            self.rules = rules
        self.text_close = name == "text"

    def thoughts(self, model, tok, prompts, n, budget, temperature, gens=None):
        """``(bodies, closed)``: per row the thought's ids after the opener, and whether the model closed it.

        A token thought's body excludes ``</think>``; a text thought's body keeps the tokens in which
        the model wrote the close phrase (they are its close).
        """
        s = sample(
            model, tok, [p + self.open_ids for p in prompts], n=n, max_new_tokens=budget, temperature=temperature,
            rules=self.rules, prompt_generators=gens, batch_size=16,
        )  # fmt: skip
        bodies, closed = [], []
        for r in range(len(s)):
            ids = s.ids(r)
            shut = bool(s.finished[r])
            if shut and not self.text_close:
                ids = ids[:-1]
            bodies.append(ids)
            closed.append(shut)
        return bodies, closed

    def context(self, prompt, body, closed) -> list[int]:
        """``prompt opener body closer``: the ids the next token (or the answer) is read after."""
        closer = [] if (closed and self.text_close) else self.close_ids
        return [*prompt, *self.open_ids, *body, *closer]


def heldout_rows(opt: Option, model, tok, picks, none, args) -> dict:
    pad = pad_id_of(tok)
    empty = last_token_logprobs(model, [opt.context(prefix, [], False) + [x] for prefix, x in picks], pad)
    G = args.group_size
    gens = keyed_generators(args.seed, range(len(picks)))
    bodies, closed = opt.thoughts(model, tok, [p for p, _ in picks], G, args.budget, args.temperature, gens)
    seqs = [opt.context(picks[r // G][0], bodies[r], closed[r]) + [picks[r // G][1]] for r in range(len(bodies))]
    scored = last_token_logprobs(model, seqs, pad).view(len(picks), G)
    gain = scored - none[:, None]
    return {
        "empty_thought_gain": float((empty - none).mean()),
        "sampled_thought_gain": float(gain.mean()),
        "best_of_group_gain": float(gain.max(1).values.mean()),
        "heldout_closed_fraction": sum(closed) / len(closed),
        "heldout_thought_tokens": statistics.fmean(len(b) for b in bodies),
    }


def answers(opt: Option | None, model, tok, fmt, prompts, think, args):
    """Greedy answers (texts) after a greedy thought (or none), and the thoughts' closed flags and lengths."""
    if think:
        bodies, closed = opt.thoughts(model, tok, prompts, 1, args.task_budget, 0.0)
        contexts = [opt.context(p, b, c) for p, b, c in zip(prompts, bodies, closed)]
    else:
        bodies, closed, contexts = [], [], prompts
    s = sample(
        model, tok, contexts, n=1, max_new_tokens=24, temperature=0.0,
        rules=fmt.answer_rules(ANSWER_STOPS), batch_size=24,
    )  # fmt: skip
    return s.texts(tok, ANSWER_STOPS), bodies, closed


def last_number(text: str) -> str | None:
    """The answer read as the last integer of the text (a chat model answers in a sentence; issue 26's reading)."""
    found = re.findall(r"-?\d+", text.replace(",", ""))
    return found[-1] if found else None


def task_rows(opt: Option | None, model, tok, tasks, args) -> dict:
    fmt = opt.fmt if opt else ThoughtFormat.of(model, tok, ThinkSettings(chat_template="on"))
    out = {}
    for spec, (task, problems) in tasks.items():
        prompts = fmt.prompt_ids(tok, [p.prompt for p in problems])
        texts, bodies, closed = answers(opt, model, tok, fmt, prompts, opt is not None, args)
        out[spec] = {
            "accuracy": statistics.fmean(task.score(p, t) for p, t in zip(problems, texts)),
            "accuracy_last_number": statistics.fmean(
                last_number(t) == p.answer.strip() for p, t in zip(problems, texts)
            ),
        }
        if opt is not None:
            out[spec]["closed_fraction"] = sum(closed) / len(closed)
            out[spec]["thought_tokens"] = statistics.fmean(len(b) for b in bodies)
            out[spec]["example"] = tok.decode(opt.open_ids + bodies[0]) + " || " + texts[0]
    return out


def acc(r: dict) -> str:
    return f"{r['accuracy']:.3f} / {r['accuracy_last_number']:.3f}"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="folder written by `ponder corpus build`")
    p.add_argument("--options", default=",".join(OPTIONS), help=f"comma separated, of {', '.join(OPTIONS)}")
    p.add_argument("--open-phrase", default=OPEN_PHRASE)
    p.add_argument("--close-phrase", default=CLOSE_PHRASE)
    p.add_argument("--windows", type=int, default=24)
    p.add_argument("--positions", type=int, default=2, help="positions per window")
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--budget", type=int, default=24, help="thought budget on held-out text")
    p.add_argument("--tasks", default=f"add1,add2,{BB_FILE}", help="comma separated task specs")
    p.add_argument("--task-n", type=int, default=24, help="held-out problems per task")
    p.add_argument("--task-budget", type=int, default=64, help="thought budget on tasks")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.time()
    lm = load_model(MODEL, device="cpu", dtype=torch.float32)
    model, tok = lm.model.eval(), lm.tokenizer
    vocab_rows = min(think_token_ids(tok))  # the delimiters are the last rows: the mean is over the others
    picks = choose(
        heldout_windows(Path(args.corpus), tok, args.context_length, args.windows), args.positions, args.seed
    )
    none = last_token_logprobs(model, [prefix + [x] for prefix, x in picks], pad_id_of(tok))
    tasks = {}
    for spec in (s for s in args.tasks.split(",") if s):
        task = get_task(spec)
        tasks[Path(spec).parent.name if spec.endswith(".json") else spec] = (
            task,
            task.problems(args.task_n, seed=0, split="test"),
        )
    rows = {"no thought": task_rows(None, model, tok, tasks, args)}
    print(f"no-think accuracy: {json.dumps(rows['no thought'])}", flush=True)
    for name in args.options.split(","):
        t1 = time.time()
        opt = Option(name, lm, args.open_phrase, args.close_phrase, vocab_rows)
        rows[name] = {**heldout_rows(opt, model, tok, picks, none, args), **task_rows(opt, model, tok, tasks, args)}
        rows[name]["wall_s"] = round(time.time() - t1, 1)
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    print(f"\n{MODEL}: {len(picks)} held-out positions x G = {args.group_size}, budget {args.budget}; "
          f"tasks: {args.task_n} problems each, greedy, thought budget {args.task_budget}")  # fmt: skip
    heads = ["empty thought (nats)", "sampled thought (nats)", "closed (text)"]
    for spec in tasks:
        heads += [f"{spec} closed", f"{spec} think acc (task's score / last number)"]
    print("| option | " + " | ".join(heads) + " |\n" + "| --- " * (len(heads) + 1) + "|")
    for name, r in rows.items():
        if name == "no thought":
            cells = ["-", "-", "-"]
            cells += [x for spec in tasks for x in ("-", f"{acc(r[spec])} (no-think)")]
        else:
            cells = [f"{r['empty_thought_gain']:+.3f}", f"{r['sampled_thought_gain']:+.3f}",
                     f"{r['heldout_closed_fraction']:.2f}"]  # fmt: skip
            cells += [x for spec in tasks for x in (f"{r[spec]['closed_fraction']:.2f}", acc(r[spec]))]
        print(f"| {name} | " + " | ".join(cells) + " |")
    payload = {
        "model": MODEL,
        "positions": len(picks),
        "rows": rows,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "wall_s": round(time.time() - t0, 1),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()
