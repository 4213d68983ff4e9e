"""RLP's compute account, independent of the batch layout, and the compute-matched CPT budget.

RLP's cost is defined by its rollouts, not by how a step lays them out in memory: the
shared-prefix tree and the padded layout (:mod:`ponder.rl.rollout`) score the same sequences,
so they are charged the same. Everything below is counted **per position**. A position is a
token ``x_t`` with a prefix ``x_<t`` of ``P`` tokens, a reward window ``x_t .. x_{t+k-1}`` of
``k`` tokens (fewer at the end of a document) and ``G`` thoughts of ``L_1 .. L_G`` tokens
(delimiters excluded). Thought ``i`` is laid out as ::

    x_<t  <think>  c_1 .. c_{L_i}  </think>  x_t .. x_{t+k-1}
    |- P -|------------- branch: L_i + 2 + k tokens ------------|

**The paper's token formula** ``T_flop = n * l_seq * bs * iters + T_inp`` (``n = G`` thoughts,
``bs`` positions per step, ``iters`` steps):

* ``l_seq`` of a thought is its branch, ``L_i + 2 + k`` (thought tokens, the two delimiters, the
  reward window). The prefix term of ``l_seq`` is **zero**: the prefix is shared by the G thoughts
  and is counted once per position, in ``T_inp``. ``n * l_seq * bs * iters`` is the measured sum
  of branch lengths over all thoughts (``rollout_tokens``), not a nominal product.
* ``T_inp`` is the text the positions read: ``P + k`` per position (``input_tokens``). Two
  positions of one document are two reads (their prefixes overlap but are each counted).

So a long prefix with a short thought costs ``P + k + G * (L + 2 + k)`` tokens, whichever layout
ran it (the padded layout computes ``G * P`` prefix tokens, the tree ``P`` per document).

**The FLOP count** charges ``2 * N`` FLOPs per token for a forward pass and ``4 * N`` for a
backward pass, ``N`` being the parameters that take part in a per-token matmul (:func:`model_size`:
all weights but the input-embedding lookup; a tied output head is counted). Per position:

* generation (the policy samples, no gradient): prefill of ``x_<t <think>`` once, ``P + 1``
  tokens (the sampler shares it across the G thoughts), then one decode forward per thought
  token, ``sum_i L_i`` (an unclosed thought's last forward is never run: at most one token per
  unclosed thought is overcharged);
* the policy pass, forward and backward, ``E`` times (``E`` = ``ppo_epochs``): the prefix once
  and every branch, ``P + sum_i (L_i + 2 + k)`` tokens. The reward's ``log p(x_t | x_<t, c)``
  comes out of the first forward: no extra pass (in micro-batches, ``micro_batch`` smaller than the
  step's positions, it comes from a pass without gradients the account does not charge: a memory
  trade like checkpointing's recompute, not part of the method). A mixed-in next-token loss adds a forward and
  backward over ``P + k`` tokens;
* the EMA baseline pass (no gradient): ``P + k`` tokens for ``log p_EMA(x_t.. | x_<t)``; a KL
  term adds an EMA forward over the prefix and every branch.

The attention term is reported separately (``attention_flops``) and left out of ``flops`` and of
every budget: a token at absolute position ``j`` attends to ``j + 1`` keys and costs
``4 * layers * width * (j + 1)`` forward FLOPs (scores and the weighted sum; ``width`` = query
heads x head size), backward twice that; padding is not charged.

**The CPT budget** (:func:`cpt_budget_tokens`): ``flop`` -> ``T_flop`` (the paper's match);
``token`` -> ``T_inp``; ``compute`` -> ``flops / (6 * N_cpt)``, the tokens CPT trains (forward
plus backward, ``6 * N`` each) for the same dense FLOPs. CPT then runs the steps whose trained tokens,
counted after its own truncation, reach the budget, its last step cut to the budget
(:func:`steps_for_budget`), so it trains exactly the budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields

#: Forward FLOPs per parameter and token; a backward pass costs twice the forward.
FORWARD, BACKWARD = 2, 4
#: Forward attention FLOPs per layer, query width unit and key (scores 2, weighted sum 2).
ATTENTION_FORWARD = 4
#: FLOPs per trained token and parameter (forward + backward): CPT's cost per token.
TRAIN = FORWARD + BACKWARD
#: A training pass costs this many forwards (attention included).
TRAIN_FORWARDS = TRAIN // FORWARD


@dataclass(frozen=True)
class ModelSize:
    """What the FLOP count needs of a model: matmul parameters, and for the attention term its depth and width."""

    params: int
    layers: int = 0
    attention_width: int = 0


def model_size(model) -> ModelSize:
    """:class:`ModelSize` of a Hugging Face causal LM.

    ``params``: unique parameters minus the input embedding (a lookup, no FLOPs), plus the output
    head when it is tied to it (the head's matmul is real). ``attention_width``: query heads x head size.
    """
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    emb = model.get_input_embeddings().weight
    head = getattr(model.get_output_embeddings(), "weight", None)
    params = total - emb.numel() + (head.numel() if head is emb else 0)
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", 0)
    head_dim = getattr(cfg, "head_dim", None) or (cfg.hidden_size // heads if heads else 0)
    return ModelSize(params, getattr(cfg, "num_hidden_layers", 0), heads * head_dim)


def causal_keys(start: int, n: int) -> int:
    """Keys attended by ``n`` tokens at absolute positions ``start .. start + n - 1`` under a causal mask."""
    return n * start + n * (n + 1) // 2


@dataclass(frozen=True)
class RLPCompute:
    """RLP's account for some positions (sums; ``+`` adds two accounts). See the module docstring."""

    positions: int = 0
    thoughts: int = 0
    thought_tokens: int = 0
    input_tokens: int = 0  # T_inp = sum (P + k)
    rollout_tokens: int = 0  # n * l_seq * bs * iters = sum over thoughts (L + 2 + k)
    generation_flops: int = 0
    policy_flops: int = 0
    ema_flops: int = 0
    attention_flops: int = 0

    @property
    def flop_matched_tokens(self) -> int:
        """The paper's T_flop."""
        return self.rollout_tokens + self.input_tokens

    @property
    def flops(self) -> int:
        """Dense FLOPs of generation, the policy pass and the EMA pass (attention excluded)."""
        return self.generation_flops + self.policy_flops + self.ema_flops

    @property
    def l_seq(self) -> float:
        """Mean branch length per thought (the paper's ``l_seq``; the prefix is in ``T_inp``)."""
        return self.rollout_tokens / self.thoughts if self.thoughts else 0.0

    def __add__(self, other: RLPCompute) -> RLPCompute:
        return RLPCompute(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def counters(self) -> dict[str, int]:
        """The sums, plus ``flop_matched_tokens`` and ``flops``: what the trainer's counters and summary record."""
        return {**asdict(self), "flop_matched_tokens": self.flop_matched_tokens, "flops": self.flops}


def rlp_compute(
    prefix_lengths: Sequence[int],
    thought_lengths: Sequence[int],
    target_lengths: Sequence[int],
    group_size: int,
    size: ModelSize,
    policy_epochs: int = 1,
    next_token_pass: bool = False,
    kl_pass: bool = False,
) -> RLPCompute:
    """The account of ``B`` positions: ``prefix_lengths [B]``, ``target_lengths [B]``, ``thought_lengths [B * G]``.

    Thoughts ``b*G .. b*G+G-1`` belong to position ``b`` (as in :class:`ponder.rl.rollout.Thoughts`).
    ``policy_epochs``: policy forward + backward passes per rollout; ``next_token_pass`` /
    ``kl_pass``: the optional next-token and KL terms are on (their passes run every epoch too).
    """
    if len(prefix_lengths) != len(target_lengths) or len(thought_lengths) != len(prefix_lengths) * group_size:
        raise ValueError("need one prefix and target length per position and group_size thought lengths each")
    n, w = size.params, ATTENTION_FORWARD * size.layers * size.attention_width
    total = RLPCompute()
    for b, (p, k) in enumerate(zip(prefix_lengths, target_lengths)):
        thoughts = thought_lengths[b * group_size : (b + 1) * group_size]
        branches = [length + 2 + k for length in thoughts]
        generated = sum(thoughts)
        policy_tokens = p + sum(branches)
        policy_keys = causal_keys(0, p) + sum(causal_keys(p, m) for m in branches)
        gen_keys = causal_keys(0, p + 1) + sum(causal_keys(p + 1, m) for m in thoughts)
        policy_flops = policy_epochs * TRAIN * n * policy_tokens
        policy_attn = policy_epochs * TRAIN_FORWARDS * w * policy_keys
        ema_flops, ema_keys = FORWARD * n * (p + k), causal_keys(0, p + k)
        # The next-token and KL passes run in every PPO epoch, beside the policy pass.
        if next_token_pass:
            policy_flops += policy_epochs * TRAIN * n * (p + k)
            policy_attn += policy_epochs * TRAIN_FORWARDS * w * causal_keys(0, p + k)
        if kl_pass:
            ema_flops += policy_epochs * FORWARD * n * policy_tokens
            ema_keys += policy_epochs * policy_keys
        total += RLPCompute(
            positions=1,
            thoughts=len(thoughts),
            thought_tokens=generated,
            input_tokens=p + k,
            rollout_tokens=sum(branches),
            generation_flops=FORWARD * n * (p + 1 + generated),
            policy_flops=policy_flops,
            ema_flops=ema_flops,
            attention_flops=w * (gen_keys + ema_keys) + policy_attn,
        )
    return total


def rollout_compute(rollout, group_size: int, size: ModelSize, **passes) -> RLPCompute:
    """:func:`rlp_compute` of a :class:`ponder.rl.rollout.Rollout` (an empty account for None)."""
    if rollout is None:
        return RLPCompute()
    return rlp_compute(
        [len(p) for p in rollout.prefixes],
        [len(t) for t in rollout.thoughts.ids],
        [len(t) for t in rollout.targets],
        group_size,
        size,
        **passes,
    )


def flop_matched_tokens(n: int, l_seq: float, batch_size: int, iters: int, input_tokens: int) -> float:
    """T_flop = n * l_seq * bs * iters + T_inp (nominal form, from the paper)."""
    return n * l_seq * batch_size * iters + input_tokens


#: What ``ponder cpt --match`` reads from an RLP summary.
MATCHES = ("flop", "token", "compute")


def cpt_budget_tokens(match: str, summary: dict, cpt_params: int) -> int:
    """CPT's token budget from an RLP summary: ``flop`` T_flop, ``token`` T_inp, ``compute`` flops / (6 N_cpt)."""
    if match == "flop":
        return int(summary["flop_matched_tokens"])
    if match == "token":
        return int(summary["input_tokens"])
    if match == "compute":
        return round(summary["flops"] / (TRAIN * cpt_params))
    raise ValueError(f"unknown compute matching {match!r} ({', '.join(MATCHES)})")


def steps_for_budget(batch_tokens: Iterable[int], budget_tokens: int) -> tuple[int, int]:
    """``(steps, last_step_tokens)``: the steps whose summed tokens reach the budget, the last one cut to it.

    ``batch_tokens``: the tokens each successive step trains on (read until the budget is reached).
    Every step but the last trains its whole batch; the last trains ``last_step_tokens`` of it, so
    the steps together train exactly ``budget_tokens`` (whole steps alone can miss a small budget
    by most of a step).
    """
    if budget_tokens < 1:
        raise ValueError(f"a budget of {budget_tokens} tokens trains nothing")
    total, steps = 0, 0
    for tokens in batch_tokens:
        if tokens <= 0:
            raise ValueError("a training step with no tokens: the documents are empty")
        steps += 1
        if total + tokens >= budget_tokens:
            return steps, budget_tokens - total
        total += tokens
    raise ValueError("the document stream ended before the budget was reached")
