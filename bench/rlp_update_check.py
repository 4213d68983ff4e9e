"""Does one RLP update move each thought's log-probability with the sign and size of its advantage?

Takes N documents of the demo task, puts the position at each answer start, samples G thoughts,
runs one RLP optimizer step and prints: the correlation of each thought's log-prob change with its
advantage, the mean change for positive and negative advantages, and the importance-reweighted
mean reward of the same samples before and after (it must rise for a correct policy gradient).

    python bench/rlp_update_check.py --model /tmp/bP/final --lr 1e-4 --temperature 1.0 --reward-tokens 8
"""

from __future__ import annotations

import argparse
import itertools

import torch

import ponder.rl.rollout as rollout
from ponder.data.registry import get_task
from ponder.data.sources import TaskSource
from ponder.lm.thinking import Sampling
from ponder.models.lookup import load_model
from ponder.rl.advantages import group_advantages, rlp_reward
from ponder.rl.batches import target_logprob_sums
from ponder.rl.generation import TransformersBackend
from ponder.rl.positions import keyed_generators, tokenize_docs
from ponder.rl.rlp import RLPConfig, RLPTrainer
from ponder.train.losses import clipped_surrogate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--task", default="add3-5")
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--reward-tokens", type=int, default=8)
    ap.add_argument("--out", default="/tmp/rlp_update_check")
    args = ap.parse_args()
    torch.manual_seed(0)
    lm = load_model(args.model)
    texts = list(itertools.islice(TaskSource(get_task(args.task), seed=0).stream(), args.docs))
    docs = tokenize_docs(lm.tokenizer, texts, 128)
    # Every position at an answer start: the one place where a thought can help on this task.
    rollout.choose_positions = lambda ds, per_doc, gen, weights=None: [
        (d, doc.answer_start) for d, doc in enumerate(ds)
    ]
    cfg = RLPConfig(
        lr=args.lr, temperature=args.temperature, reward_tokens=args.reward_tokens, group_size=args.group_size
    )
    trainer = RLPTrainer(lm.model, lm.tokenizer, None, cfg, args.out)
    recipe = trainer.recipe
    recipe.ema.initialize(lm.model)
    g = args.group_size
    fmt = recipe.fmt
    backend = TransformersBackend(lm.model, lm.tokenizer, fmt)
    ro = rollout.make_rollout(
        lm.model,
        rollout.baseline_pass(recipe.ema.model, lm.tokenizer, fmt, docs),
        lm.tokenizer,
        fmt,
        docs,
        1,
        g,
        args.reward_tokens,
        Sampling(args.temperature, max_thought_tokens=56),
        keyed_generators(0, range(len(docs))),
        backend,
    )
    b = ro.batch
    lm.model.train()
    logp = b.scores(lm.model, trainer.inv_temperature)[0]
    target = target_logprob_sums(logp.detach(), b.target_mask).view(-1, g)
    rewards = rlp_reward(target, ro.baseline_logp[:, None].expand(-1, g))
    adv = group_advantages(rewards, correction="rlp").flatten()
    before = (logp.detach() * b.loss_mask).sum(1)
    loss, _ = clipped_surrogate(logp, b.behaviour_logp, adv, b.loss_mask, cfg.eps_low, cfg.eps_high, reduce="rlp")
    trainer.optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lm.model.parameters(), cfg.grad_clip)
    trainer.optimizer.step()
    with torch.no_grad():
        after = (b.scores(lm.model, trainer.inv_temperature)[0] * b.loss_mask).sum(1)
    delta = after - before
    w = torch.softmax(delta.view(-1, g), dim=1)  # importance weights of the same samples under the new policy
    print(f"corr(advantage, d log p)      {float(torch.corrcoef(torch.stack([adv, delta]))[0, 1]):+.3f}")
    print(f"mean d log p, advantage > 0   {float(delta[adv > 1e-3].mean()):+.4f}")
    print(f"mean d log p, advantage < 0   {float(delta[adv < -1e-3].mean()):+.4f}")
    print(f"mean reward before -> after   {float(rewards.mean()):+.3f} -> {float((w * rewards).sum(1).mean()):+.3f}")


if __name__ == "__main__":
    main()
