"""RLP's compute account: hand computations, long documents, layout independence, and CPT matched to it."""

import json
import random

import pytest
import torch

from ponder.train.compute import (
    ModelSize,
    RLPCompute,
    causal_keys,
    cpt_budget_tokens,
    flop_matched_tokens,
    model_size,
    rlp_compute,
    rollout_compute,
    steps_for_budget,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_causal_keys_is_the_sum_of_attended_keys():
    for start in range(4):
        for n in range(5):
            assert causal_keys(start, n) == sum(start + j + 1 for j in range(n))


def test_account_by_hand():
    # Two positions, G = 2: (P=3, k=1, thoughts of 2 and 4 tokens), (P=5, k=2, thoughts of 1 and 1).
    # N = 10 matmul parameters; attention: 1 layer of width 2 -> 4 * 1 * 2 = 8 FLOPs per key (forward).
    acc = rlp_compute([3, 5], [2, 4, 1, 1], [1, 2], group_size=2, size=ModelSize(10, layers=1, attention_width=2))
    # Branches L + 2 + k: (2 + 2 + 1, 4 + 2 + 1) = (5, 7) and (1 + 2 + 2, 1 + 2 + 2) = (5, 5): 12 + 10 tokens.
    assert acc.rollout_tokens == 22 and acc.input_tokens == (3 + 1) + (5 + 2) and acc.flop_matched_tokens == 33
    assert acc.positions == 2 and acc.thoughts == 4 and acc.thought_tokens == 8 and acc.l_seq == 22 / 4
    # Generation: prefill P + 1, decode sum L:  2 * 10 * ((3 + 1 + 6) + (5 + 1 + 2)).
    assert acc.generation_flops == 2 * 10 * (10 + 8)
    # Policy pass, forward + backward: prefix once + branches: 6 * 10 * ((3 + 12) + (5 + 10)).
    assert acc.policy_flops == 6 * 10 * (15 + 15)
    # EMA baseline: P + k per position: 2 * 10 * (4 + 7).
    assert acc.ema_flops == 2 * 10 * 11
    assert acc.flops == 360 + 1800 + 220
    # Keys, position 1: generation 10 + (9 + 2) + (16 + 10) = 47, policy 6 + (15 + 15) + (21 + 28) = 85, EMA 10;
    # position 2: generation 21 + 7 + 7 = 35, policy 15 + 40 + 40 = 95, EMA 28. The policy pass counts 3 forwards.
    assert acc.attention_flops == 8 * (47 + 10) + 3 * 8 * 85 + 8 * (35 + 28) + 3 * 8 * 95


def test_optional_passes_and_epochs():
    size = ModelSize(10)
    plain = rlp_compute([3], [2, 4], [1], 2, size)
    twice = rlp_compute([3], [2, 4], [1], 2, size, policy_epochs=2)
    assert twice.policy_flops == 2 * plain.policy_flops and twice.generation_flops == plain.generation_flops
    ntp = rlp_compute([3], [2, 4], [1], 2, size, next_token_pass=True)
    assert ntp.policy_flops - plain.policy_flops == 6 * 10 * (3 + 1)  # forward + backward over x_<t+k
    kl = rlp_compute([3], [2, 4], [1], 2, size, kl_pass=True)
    assert kl.ema_flops - plain.ema_flops == 2 * 10 * (3 + 12)  # an EMA forward over the prefix and branches
    assert plain.attention_flops == 0  # no layers given: the attention term is off
    # The next-token and KL passes run in every PPO epoch, as the policy pass does: charged per epoch.
    both = rlp_compute([3], [2, 4], [1], 2, size, policy_epochs=3, next_token_pass=True, kl_pass=True)
    assert both.policy_flops == 3 * ntp.policy_flops
    assert both.ema_flops - plain.ema_flops == 3 * (kl.ema_flops - plain.ema_flops)
    with pytest.raises(ValueError, match="group_size thought lengths"):
        rlp_compute([3], [2], [1], 2, size)


def test_long_prefix_short_thoughts():
    """A 1000-token prefix with four 4-token thoughts: the prefix counts once, in T_inp, not G times."""
    n = 1000
    acc = rlp_compute([1000], [4, 4, 4, 4], [1], group_size=4, size=ModelSize(n))
    assert acc.input_tokens == 1001 and acc.rollout_tokens == 4 * (4 + 2 + 1) and acc.flop_matched_tokens == 1029
    padded_rows = 4 * (1000 + 4 + 2 + 1)  # what the padded layout computes (the old counter's figure)
    assert padded_rows / acc.flop_matched_tokens > 3.9
    # FLOPs: generation 2N (1001 + 16), policy 6N (1000 + 28), EMA 2N * 1001 = 10204 N.
    assert acc.flops == n * (2 * 1017 + 6 * 1028 + 2 * 1001) == 10204 * n
    summary = acc.counters()
    assert cpt_budget_tokens("flop", summary, n) == 1029
    assert cpt_budget_tokens("token", summary, n) == 1001
    assert cpt_budget_tokens("compute", summary, n) == round(10204 / 6)  # CPT spends 6N per token
    with pytest.raises(ValueError, match="unknown compute matching"):
        cpt_budget_tokens("words", summary, n)


def test_accounts_add_and_match_the_papers_formula():
    size = ModelSize(7)
    a = rlp_compute([3], [2, 4], [1], 2, size)
    b = rlp_compute([5], [1, 1], [2], 2, size)
    assert a + b == rlp_compute([3, 5], [2, 4, 1, 1], [1, 2], 2, size)
    assert RLPCompute() + a == a
    total = a + b
    # n * l_seq * bs * iters + T_inp with the measured mean l_seq and bs * iters = 2 positions.
    assert flop_matched_tokens(2, total.l_seq, 2, 1, total.input_tokens) == total.flop_matched_tokens
    assert flop_matched_tokens(n=8, l_seq=100, batch_size=4, iters=10, input_tokens=500) == 8 * 100 * 4 * 10 + 500


def test_model_size_counts_matmul_weights(random_tiny):
    model, _ = random_tiny
    size = model_size(model)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))  # LM head included
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    assert size.params == linear + norms
    cfg = model.config
    assert size.layers == cfg.num_hidden_layers and size.attention_width == cfg.hidden_size


def test_tree_and_padded_layouts_get_the_same_account(random_tiny):
    """The same rollouts laid out as a tree or as padded rows: one account; the layouts' own token counts differ."""
    from ponder.lm.thinking import Sampling, ThoughtFormat
    from ponder.rl.generation import TransformersBackend
    from ponder.rl.positions import Doc, keyed_generators
    from ponder.rl.rollout import baseline_pass, make_rollout

    model, tok = random_tiny
    fmt = ThoughtFormat.of(model, tok)
    backend = TransformersBackend(model, tok, fmt)
    docs = [Doc(tok("the cat sat on the mat, 12+34=46")["input_ids"]), Doc(tok("seven and eight")["input_ids"])]
    size = model_size(model)
    rollouts, accounts = {}, {}
    for layout in ("tree", "padded"):
        gens = keyed_generators(3, [0, 1])
        base = baseline_pass(model, tok, fmt, docs)
        rollouts[layout] = make_rollout(
            model, base, tok, fmt, docs, 2, 3, 2, Sampling(1.0, max_thought_tokens=5), gens, backend, layout=layout
        )
        accounts[layout] = rollout_compute(rollouts[layout], 3, size)
    tree, padded = rollouts["tree"], rollouts["padded"]
    assert tree.thoughts.ids == padded.thoughts.ids and tree.positions == padded.positions
    assert accounts["tree"] == accounts["padded"]
    acc, g = accounts["tree"], 3
    prefixes = [len(p) for p in tree.prefixes]
    # The layouts compute different numbers of tokens for the same rollouts ...
    assert padded.batch.num_tokens == acc.rollout_tokens + g * sum(prefixes)  # the prefix once per thought
    last = {d: t for d, t in tree.positions}  # positions are sorted: the last one per document is its t_max
    assert tree.batch.num_tokens == acc.rollout_tokens + sum(last.values())  # the prefix once per document
    assert padded.batch.num_tokens > tree.batch.num_tokens
    # ... while the account charges the policy pass the prefix once per position.
    assert acc.policy_flops == 6 * size.params * (sum(prefixes) + acc.rollout_tokens)


def test_trainer_counts_the_same_budget_in_both_layouts(tmp_path):
    from ponder.data.sources import TaskSource
    from ponder.data.synthetic import Addition
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model
    from ponder.rl.rlp import RLPConfig, RLPTrainer

    tok = build_char_tokenizer()
    counters = {}
    for layout in ("tree", "padded"):
        model = build_tiny_model(tok, TinyArch(**_arch()))
        cfg = RLPConfig(
            steps=1, docs_per_step=3, group_size=3, max_thought_tokens=6, context_length=32, batch_layout=layout
        )
        trainer = RLPTrainer(model, tok, TaskSource(Addition(2), seed=0), cfg, tmp_path / layout)
        trainer.train_step()
        counters[layout] = trainer.recipe.counters
    keys = RLPCompute().counters()
    assert {k: counters["tree"][k] for k in keys} == {k: counters["padded"][k] for k in keys}
    c = counters["tree"]
    assert c["positions"] == 3 and c["flop_matched_tokens"] == c["input_tokens"] + c["rollout_tokens"] > 0
    assert c["flops"] == c["generation_flops"] + c["policy_flops"] + c["ema_flops"]


def test_steps_for_budget_reaches_the_budget_with_a_cut_last_step():
    assert steps_for_budget(iter([100] * 10), 240) == (3, 40)  # 100 + 100 + 40 of the third batch
    assert steps_for_budget(iter([100] * 10), 300) == (3, 100)
    assert steps_for_budget(iter([100] * 10), 40) == (1, 40)
    assert steps_for_budget(iter([30, 100, 5]), 120) == (2, 90)
    with pytest.raises(ValueError, match="ended before"):
        steps_for_budget(iter([10, 10]), 100)
    with pytest.raises(ValueError, match="no tokens"):
        steps_for_budget(iter([0]), 100)
    with pytest.raises(ValueError, match="trains nothing"):
        steps_for_budget(iter([10]), 0)


def test_cut_to_tokens_keeps_the_first_tokens_of_a_batch():
    from ponder.train.next_token import cut_to_tokens

    rows = [([1, 2, 3], 0), ([4, 5], 1), ([6, 7, 8], 0)]
    assert cut_to_tokens(rows, 4) == [([1, 2, 3], 0), ([4], 1)]
    assert cut_to_tokens(rows, 8) == rows and cut_to_tokens(rows, 3) == [([1, 2, 3], 0)]


def _words(rng: random.Random, chars: int) -> str:
    vocab = ["the", "river", "ran", "past", "a", "quiet", "town", "where", "people", "read", "books", "at", "night"]
    out = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(vocab))
    return " ".join(out)[:chars]


def test_cpt_match_run_spends_the_rlp_budget_on_long_documents(tmp_path):
    """RLP, then `cpt --match-run` on ~1000-character documents truncated to 64 tokens: within 2% of the budget."""
    from ponder.cli import main
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    model_dir = tmp_path / "model"
    build_tiny_model(tok, TinyArch(**_arch())).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rng = random.Random(0)
    corpus = tmp_path / "long.jsonl"
    corpus.write_text("".join(json.dumps({"text": _words(rng, 1000)}) + "\n" for _ in range(30)))
    common = ["--model", str(model_dir), "--corpus", str(corpus), "--quiet"]
    rlp_args = ["--steps", "2", "--docs-per-step", "6", "--group-size", "2", "--max-thought-tokens", "4"]
    assert main(["rlp", *common, *rlp_args, "--context-length", "64", "--out", str(tmp_path / "rlp")]) == 0
    rlp = json.loads((tmp_path / "rlp" / "rlp_summary.json").read_text())
    assert rlp["flop_matched_tokens"] == rlp["input_tokens"] + rlp["rollout_tokens"]
    # Windows of 256 tokens: one step is ~10% of this budget, so whole steps alone would miss it by up to 5%.
    cpt_args = ["--match-run", str(tmp_path / "rlp"), "--batch-size", "2", "--max-length", "256", "--lr", "1e-4"]
    assert main(["cpt", *common, *cpt_args, "--out", str(tmp_path / "cpt")]) == 0
    cpt = json.loads((tmp_path / "cpt" / "cpt_summary.json").read_text())
    budget = rlp["flop_matched_tokens"]
    assert cpt["match"] == "flop" and cpt["budget_tokens"] == budget and cpt["tokens_seen"] == cpt["planned_tokens"]
    assert cpt["tokens_seen"] == budget  # the last step cut to the budget: within 2% and better, exact


def _arch():
    return dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
