import math

import pytest
import torch
from torch import nn

from ponder.lm.lens import LensUnsupported, hidden_states, jsd, layer_logprobs, lens_jsd, lens_logits, lens_parts
from ponder.lm.padding import left_pad
from ponder.lm.tiny import TinyArch, build_tiny_model

NUM_LAYERS = 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def llama(tok):
    arch = TinyArch(hidden_size=64, num_layers=NUM_LAYERS, num_heads=2, intermediate_size=128)
    return build_tiny_model(tok, arch).eval()


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()


@pytest.fixture(scope="module")
def batch(tok):
    return left_pad([tok(t)["input_ids"] for t in ["short", "a somewhat longer input"]], tok.pad_token_id)


def test_lens_parts(llama, gpt2):
    assert lens_parts(llama) == (llama.model.norm, llama.lm_head)
    assert lens_parts(gpt2) == (gpt2.transformer.ln_f, gpt2.lm_head)

    class NoNorm(nn.Module):
        def get_output_embeddings(self):
            return nn.Linear(4, 4)

    class NoHead(nn.Module):
        def get_output_embeddings(self):
            return None

    for bad in (NoNorm(), NoHead()):
        with pytest.raises(LensUnsupported):
            lens_parts(bad)
    assert issubclass(LensUnsupported, ValueError)


def pre_norm_final_state(model, ids, mask):
    """The last decoder layer's raw output, captured at the final norm's input."""
    captured = {}
    norm, _ = lens_parts(model)
    handle = norm.register_forward_pre_hook(lambda mod, args: captured.update(h=args[0]))  # returns None: no change
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
    finally:
        handle.remove()
    return captured["h"], logits


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_lens_of_final_residual_is_model_output(request, which, batch):
    """The norm + unembed the lens applies to intermediate layers reproduces the real output."""
    model = request.getfixturevalue(which)
    ids, mask = batch
    ids = ids % model.config.vocab_size
    mask = torch.ones_like(mask)  # a plain forward: no position ids, so no padding
    h, logits = pre_norm_final_state(model, ids, mask)
    with torch.no_grad():
        torch.testing.assert_close(lens_logits(model, h).float(), logits.float(), atol=1e-5, rtol=0)


def test_layer_logprobs_final_equals_model(llama, batch):
    ids, mask = batch
    states = hidden_states(llama, ids, mask)
    assert len(states) == NUM_LAYERS + 1 and all(s.shape == (*ids.shape, 64) for s in states)
    layers = list(layer_logprobs(llama, ids, mask))
    assert [i for i, _ in layers] == list(range(NUM_LAYERS + 1))
    with torch.no_grad():
        expected = llama(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    final = layers[-1][1]
    assert final.dtype == torch.float32 and final.shape == (*ids.shape, len(llama.lm_head.weight))
    valid = mask.bool()
    torch.testing.assert_close(final[valid], expected.float().log_softmax(-1)[valid], atol=1e-5, rtol=0)
    # Each intermediate layer is norm + unembed of its hidden state.
    mid = dict(layer_logprobs(llama, ids, mask, layers=[1, -1]))
    assert set(mid) == {1, NUM_LAYERS}
    with torch.no_grad():
        ref = llama.lm_head(llama.model.norm(states[1])).float().log_softmax(-1)
    torch.testing.assert_close(mid[1][valid], ref[valid], atol=1e-5, rtol=0)


def test_jsd_hand_computation():
    def log(p):
        return torch.tensor(p, dtype=torch.float64).log()

    assert jsd(log([1.0, 0.0]), log([0.0, 1.0])).item() == pytest.approx(1.0)
    assert jsd(log([0.3, 0.7]), log([0.3, 0.7])).item() == pytest.approx(0.0, abs=1e-7)
    # P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4):
    # KL(P||M) = 1/2 log2(2/3) + 1/2 log2(2), KL(Q||M) = log2(4/3)
    expected = 0.5 * ((0.5 * math.log2(2 / 3) + 0.5 * math.log2(2)) + math.log2(4 / 3))
    assert jsd(log([0.5, 0.5]), log([1.0, 0.0])).item() == pytest.approx(expected, abs=1e-6)
    assert jsd(log([1.0, 0.0]), log([0.5, 0.5])).item() == pytest.approx(expected, abs=1e-6)  # symmetric
    nats = jsd(log([0.5, 0.5]), log([1.0, 0.0]), base=math.e).item()
    assert nats == pytest.approx(expected * math.log(2), abs=1e-6)
    batched = jsd(torch.stack([log([1.0, 0.0]), log([0.5, 0.5])]), torch.stack([log([0.0, 1.0]), log([1.0, 0.0])]))
    assert batched.shape == (2,) and batched.tolist() == pytest.approx([1.0, expected], abs=1e-6)


def test_lens_jsd(llama, batch):
    ids, mask = batch
    div = lens_jsd(llama, ids, mask)
    assert div.shape == (NUM_LAYERS + 1, *ids.shape)
    assert (div >= 0).all() and (div <= 1).all()
    assert (div[-1] == 0).all() and (div[:, mask == 0] == 0).all()
    assert (div[0][mask.bool()] > 0).all()
    layers = dict(layer_logprobs(llama, ids, mask))
    valid = mask.bool()
    torch.testing.assert_close(div[1][valid], jsd(layers[1], layers[NUM_LAYERS])[valid], atol=1e-6, rtol=0)
    assert torch.equal(lens_jsd(llama, ids, mask, layers=[1]), div[1:2])
