"""Shared-prefix (tree) RLP batch: same log-probs and gradients as one padded row per thought."""

import pytest
import torch

from ponder.lm.thinking import Sampling, ThoughtFormat, Thoughts
from ponder.rl.batches import resolve_layout, rlp_padded_batch, rlp_tree_batch, target_logprob_sums
from ponder.rl.generation import TransformersBackend
from ponder.rl.positions import Doc, keyed_generators
from ponder.rl.rollout import baseline_pass, make_rollout

OPEN, CLOSE, PAD = 98, 99, 0


def _model(attn="sdpa", seed=0):
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    model = build_tiny_model(tok, TinyArch(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), seed=seed)
    model.config._attn_implementation = attn
    return model.float(), tok


def _case():
    """Two documents; doc 0 has two positions (shared prefix), doc 1 one; G = 2, k = 2; ragged thoughts."""
    docs = [[1, 10, 11, 12, 13, 14, 15, 16], [1, 20, 21, 22, 23]]
    positions = [(0, 2), (0, 5), (1, 3)]
    ids = [[40, 41], [42], [43, 44, 45], [46], [47, 48], [49, 50, 51, 52]]
    closed = torch.tensor([True, False, True, True, False, True])
    gen = torch.Generator().manual_seed(0)
    logprobs = [-torch.rand(len(t) + int(c), generator=gen) for t, c in zip(ids, closed.tolist())]
    prefixes = [docs[d][:t] for d, t in positions]
    return docs, positions, Thoughts(prefixes, 2, ids, logprobs, closed)


def test_tree_layout_masks_and_positions():
    docs, positions, thoughts = _case()
    tb = rlp_tree_batch(docs, positions, 2, thoughts, OPEN, CLOSE, PAD)
    # One prefix row per document, up to its last position (doc 0: t_max = 5, doc 1: 3).
    assert tb.prefix_ids.tolist() == [docs[0][:5], docs[1][:3] + [PAD, PAD]]
    assert tb.row.tolist() == [0, 0, 0, 0, 1, 1]
    assert tb.branch_ids[0, :6].tolist() == [OPEN, 40, 41, CLOSE, 11, 12]
    assert tb.branch_positions[0, :6].tolist() == [2, 3, 4, 5, 6, 7]
    width = 5
    # </think> of thought 0 (t = 2) sees x_0, x_1 and its own branch up to itself, nothing else.
    assert tb.allowed[0, 3].nonzero().flatten().tolist() == [0, 1, width, width + 1, width + 2, width + 3]
    # Thought 2 (t = 5) sees the whole prefix; its padding sees only itself.
    assert tb.allowed[2, 0, :width].all()
    assert tb.allowed[1, 5].nonzero().flatten().tolist() == [width + 5]
    assert tb.num_tokens == 5 + 3 + (6 + 5 + 7 + 5) + (6 + 8)  # prefixes once, branches <think> c </think> x x
    pb = rlp_padded_batch(
        [docs[d][:t] for d, t in positions], [docs[d][t : t + 2] for d, t in positions], thoughts, OPEN, CLOSE, PAD
    )
    # Masks are the padded rows' masks with each prefix cut off.
    length = tb.loss_mask.shape[1]
    for n, (_d, t) in enumerate([positions[i // 2] for i in range(6)]):
        for tree_mask, pad_mask in ((tb.loss_mask, pb.loss_mask), (tb.target_mask, pb.target_mask)):
            cut = pad_mask[n, t:]
            assert tree_mask[n, : cut.numel()].tolist() == cut[:length].tolist()
            assert not tree_mask[n, cut.numel() :].any()
        # The sampler's log-probs sit exactly on the loss mask: thought tokens, then the model's own </think>.
        assert torch.equal(tb.behaviour_logp[n][tb.loss_mask[n]], thoughts.logprobs[n])
        assert torch.equal(pb.behaviour_logp[n][pb.loss_mask[n]], thoughts.logprobs[n])
        assert int(tb.loss_mask[n].sum()) == len(thoughts.ids[n]) + int(thoughts.closed[n])


@pytest.mark.parametrize("attn,inv_temperature", [("sdpa", 1.0), ("eager", 1.0), ("sdpa", 1 / 0.7)])
def test_tree_forward_matches_padded_logprobs_and_gradients(one_thread, attn, inv_temperature):
    docs, positions, thoughts = _case()
    model, _ = _model(attn)
    pb = rlp_padded_batch(
        [docs[d][:t] for d, t in positions], [docs[d][t : t + 2] for d, t in positions], thoughts, OPEN, CLOSE, PAD
    )
    tb = rlp_tree_batch(docs, positions, 2, thoughts, OPEN, CLOSE, PAD)
    weights = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    weights[:, 0] = 0  # <think> is scored by the padded rows only; it is no action

    def run(batch):
        model.zero_grad()
        logp, ent = batch.scores(model, inv_temperature)
        # Compare in branch coordinates: the padded row's tokens after its prefix.
        rows = []
        for n, (_d, t) in enumerate([positions[i // 2] for i in range(6)]):
            r = logp[n] if batch.layout == "tree" else logp[n, t:]
            rows.append(torch.nn.functional.pad(r, (0, 16 - r.numel())))
        branch = torch.stack(rows)
        loss = (branch * weights).sum() + (ent * batch.loss_mask).sum()
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        return branch.detach(), target_logprob_sums(logp.detach(), batch.target_mask), grads

    lp_pad, tgt_pad, g_pad = run(pb)
    lp_tree, tgt_tree, g_tree = run(tb)
    torch.testing.assert_close(lp_tree, lp_pad, atol=1e-5, rtol=0)
    torch.testing.assert_close(tgt_tree, tgt_pad, atol=1e-5, rtol=0)
    assert tgt_tree.abs().min() > 0  # the targets really were scored
    for name in g_pad:
        torch.testing.assert_close(g_tree[name], g_pad[name], atol=1e-5, rtol=1e-5, msg=name)


def test_layout_falls_back_for_flash_attention(caplog):
    model, _ = _model("sdpa")
    assert resolve_layout(model) == "tree"
    model.config._attn_implementation = "flash_attention_2"
    with caplog.at_level("WARNING"):
        assert resolve_layout(model) == "padded"
    assert "4D mask" in caplog.text
    with pytest.raises(ValueError):
        resolve_layout(model, "tree")


def test_rollout_per_document_generators_ignore_batch_composition(one_thread):
    """A document's positions and thoughts depend only on its own generator, not on the other documents."""
    model, tok = _model()
    fmt = ThoughtFormat.of(model, tok)
    backend = TransformersBackend(model, tok, fmt)
    docs = [Doc(tok("12+34=46")["input_ids"]), Doc(tok("7+8=15, 9+9=18")["input_ids"])]

    def rollout(sel):
        gens = [keyed_generators(5, [i])[0] for i in sel]
        chosen = [docs[i] for i in sel]
        base = baseline_pass(model, tok, fmt, chosen)
        return make_rollout(model, base, tok, fmt, chosen, 2, 3, 1, Sampling(1.0, max_thought_tokens=6), gens, backend)

    both, alone = rollout([0, 1]), rollout([1])
    assert [t for d, t in both.positions if d == 1] == [t for _, t in alone.positions]
    assert both.thoughts.ids[6:] == alone.thoughts.ids
    assert both.batch.layout == "tree"
    torch.testing.assert_close(both.baseline_logp[2:], alone.baseline_logp)


def test_generation_backends(one_thread, monkeypatch):
    """The transformers backend gives G closed-or-budgeted thoughts per prefix, reproducible per generator;
    vLLM, absent here, is refused with a PonderError and ``auto`` falls back to transformers."""
    import sys

    from ponder.errors import PonderError
    from ponder.rl.generation import make_backend

    model, tok = _model()
    fmt = ThoughtFormat.of(model, tok)
    backend = make_backend("auto", model, tok, fmt)
    assert isinstance(backend, TransformersBackend)
    prefixes = [tok("12+3")["input_ids"], tok("7+8=")["input_ids"]]
    a = backend.generate(prefixes, 3, Sampling(1.0, max_thought_tokens=5), keyed_generators(0, [1, 2]))
    b = backend.generate(prefixes[1:], 3, Sampling(1.0, max_thought_tokens=5), keyed_generators(0, [2]))
    assert len(a.ids) == 6 and all(1 <= len(t) <= 5 for t in a.ids)
    assert a.ids[3:] == b.ids and a.closed[3:].tolist() == b.closed.tolist()
    assert all(len(t) == 5 for t, c in zip(a.ids, a.closed) if not c)
    assert [len(lp) for lp in a.logprobs] == [len(t) + int(c) for t, c in zip(a.ids, a.closed)]
    other, _ = _model(seed=1)
    backend.sync_weights(other)
    assert backend.model is other
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as when the extra is not installed
    with pytest.raises(PonderError, match="vllm"):
        make_backend("vllm", model, tok, fmt)
