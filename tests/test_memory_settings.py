"""Memory settings: gradient checkpointing gives the same update; the tree forward's bias follows autocast."""

import copy

import pytest
import torch
from pydantic import ValidationError

from ponder.data.sources import TaskSource
from ponder.data.synthetic import Addition
from ponder.lm import hf_compat
from ponder.rl.batches import TreeBatch, rlp_padded_batch, rlp_tree_batch
from ponder.rl.rlp import RLPConfig, RLPTrainer
from test_micro_batch import NO_CLIP, _grads, _model
from test_rlp_tree import CLOSE, OPEN, PAD, _case

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rlp_step_with_gradient_checkpointing_equals_without(char_tokenizer, tmp_path):
    cfg = dict(
        steps=1,
        docs_per_step=2,
        group_size=3,
        max_thought_tokens=5,
        context_length=24,
        lr=1e-3,
        grad_clip=NO_CLIP,
        min_reward_spread=0.0,
        micro_batch=1,
    )
    base = _model(char_tokenizer)
    runs = {}
    for ckpt in (False, True):
        model = copy.deepcopy(base)
        extra = {"gradient_checkpointing": True} if ckpt else {"batch_layout": "padded"}
        trainer = RLPTrainer(
            model, char_tokenizer, TaskSource(Addition(2), seed=0), RLPConfig(**cfg, **extra), tmp_path / str(ckpt)
        )
        trainer.train_step()
        assert hf_compat.activation_checkpointing_enabled(model) == ckpt
        runs[ckpt] = _grads(model)
    for k, g in runs[False].items():
        torch.testing.assert_close(runs[True][k], g, atol=1e-6, rtol=1e-5, msg=k)
    with pytest.raises(ValidationError, match="tree layout"):
        RLPConfig(gradient_checkpointing=True, batch_layout="tree")


def test_tree_bias_follows_autocast_dtype(char_tokenizer, monkeypatch):
    """Under bf16 autocast the tree's additive mask is bf16 (what the attention's bf16 scores take), log-probs fp32."""
    docs, positions, thoughts = _case()
    tb = rlp_tree_batch(docs, positions, 2, thoughts, OPEN, CLOSE, PAD)
    pb = rlp_padded_batch(
        [docs[d][:t] for d, t in positions], [docs[d][t : t + 2] for d, t in positions], thoughts, OPEN, CLOSE, PAD
    )
    seen = []
    bias = TreeBatch.attention_bias
    monkeypatch.setattr(TreeBatch, "attention_bias", lambda self, dtype: seen.append(dtype) or bias(self, dtype))
    model = _model(char_tokenizer).float().eval()
    with torch.no_grad():
        fp32 = tb.scores(model)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = tb.scores(model)[0]
            padded = pb.scores(model)[0]
    assert seen == [torch.float32, torch.bfloat16] and bf16.dtype == torch.float32
    targets = tb.target_mask
    # The same sums under autocast in both layouts (bf16 rounding apart), and near the fp32 figures.
    sums = [(x * m).sum(1) for x, m in ((bf16, targets), (padded, pb.target_mask), (fp32, targets))]
    torch.testing.assert_close(sums[0], sums[1], atol=0.1, rtol=0.02)
    torch.testing.assert_close(sums[0], sums[2], atol=0.1, rtol=0.02)
