"""SmolLM2's answers to three chains on add1, with and without the chat template (what the planners were scored on).

Greedy, no-think, 6 held-out problems of seed 0; prints the accuracy and the first answers of each:

    OMP_NUM_THREADS=1 python bench/plan_chat_framing_smol.py
"""

from __future__ import annotations

import torch

from ponder.data.registry import get_task
from ponder.lm.thinking import ThinkSettings, ThoughtFormat, think_then_answer
from ponder.models.lookup import load_model
from ponder.plan.edits import mine_vocabulary
from ponder.plan.state import Chain, render_parts


def main() -> int:
    torch.set_num_threads(1)
    lm = load_model("smollm2-135m")
    tok, task = lm.tokenizer, get_task("add1")
    problems = task.problems(6, seed=0, split="test")
    vocab = mine_vocabulary(task, seed=0)
    direct = [e for e in vocab.exemplars if "<think>" not in e and not e.startswith("Q:")]
    chains = {
        "start": Chain(
            instructions=tuple(vocab.instructions[:1]), exemplars=(vocab.exemplars[1],), answer_format="direct"
        ),
        "ex1": Chain(exemplars=tuple(direct[:1]), answer_format="direct"),
        "ex3": Chain(exemplars=tuple(direct[:3]), answer_format="direct"),
    }
    for chat in ("on", "off"):
        fmt = ThoughtFormat.of(lm.model, tok, ThinkSettings(chat_template=chat))
        for name, chain in chains.items():
            ids = fmt.prompt_ids(tok, [render_parts(chain, p.prompt)[0] for p in problems])
            texts = think_then_answer(lm.model, tok, fmt, ids, think=False, max_answer_tokens=12).texts(tok)
            acc = sum(task.score(p, t) for p, t in zip(problems, texts)) / len(problems)
            print(
                f"chat {chat:3s} {name:5s} accuracy {acc:.3f}",
                [(p.prompt, p.answer, t) for p, t in zip(problems, texts)][:4],
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
