"""The vLLM backend against a stand-in ``vllm`` whose signatures follow vLLM's source (tests/fake_vllm.py).

What these check: the engine arguments, the sleep / wake / weight-sync / prefix-cache-reset order
around each rollout, the weight names and live tensors sent, one seed per prefix (identical prefixes
get different thought groups), and the engine's log-probs handed back in ``Thoughts.logprobs``.
What they cannot check: that vLLM itself behaves as its source reads (never run here; README).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import fake_vllm
from ponder.errors import PonderError
from ponder.lm.delimiters import think_token_ids
from ponder.lm.thinking import Sampling, ThoughtFormat
from ponder.rl import vllm_backend
from ponder.rl.positions import keyed_generators


@pytest.fixture
def fake(monkeypatch):
    module = fake_vllm.install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(vllm_backend, "on_cuda", lambda model: True)  # the policy's weights are on CPU here
    monkeypatch.delenv("VLLM_ALLOW_INSECURE_SERIALIZATION", raising=False)
    return module


def calls(llm, skip=("generate",)):
    return [name for name, _ in llm.calls if name not in skip]


def test_engine_is_colocated_sleeping_with_ipc_sync_and_processed_logprobs(fake, random_tiny):
    model, tok = random_tiny
    backend = vllm_backend.VLLMBackend(model, tok, ThoughtFormat.of(model, tok))
    (llm,) = fake.LLM.instances
    assert llm.kwargs["enable_sleep_mode"] and llm.kwargs["enable_prefix_caching"]
    assert (
        llm.kwargs["logprobs_mode"] == "processed_logprobs"
    )  # ponder's default: log-probs at the sampling temperature
    assert llm.kwargs["weight_transfer_config"].backend == "ipc"
    assert llm.kwargs["load_format"] == "dummy" and llm.kwargs["dtype"] == "bfloat16"
    assert calls(llm) == ["init_weight_transfer_engine"] and llm.calls[0][1] == {"packed": False}
    prefixes = [[1, 5, 6], [1, 7]]
    out = backend.generate(prefixes, 3, Sampling(0.7, max_thought_tokens=6), generators=keyed_generators(0, [0, 1]))
    # First rollout: the policy's weights go in, the prefix cache is reset, then the engine sleeps.
    assert calls(llm) == [
        "init_weight_transfer_engine",
        "start_weight_update",
        "update_weights",
        "finish_weight_update",
        "reset_prefix_cache",
        "sleep",
    ]
    update = next(args for name, args in llm.calls if name == "update_weights")
    params = dict(model.named_parameters())
    assert update["names"] == list(params)  # HF names, tied weights once
    assert [h["fake-gpu-uuid"][1] for h in update["ipc_handles"]] == [p.data_ptr() for p in params.values()]
    assert ("sleep", 2) in llm.calls
    # The policy trains, the trainer syncs, the next rollout wakes weights first and the KV cache after the update.
    backend.sync_weights(model)
    backend.generate(prefixes, 3, Sampling(0.7, max_thought_tokens=6))
    assert calls(llm)[6:] == [
        "wake_up",
        "start_weight_update",
        "update_weights",
        "finish_weight_update",
        "wake_up",
        "reset_prefix_cache",
        "sleep",
    ]
    wakes = [args for name, args in llm.calls if name == "wake_up"]
    assert wakes == [["weights"], ["kv_cache"]]
    assert len(out.ids) == 6 and out.closed.dtype == torch.bool


def test_sampling_params_per_prefix_and_thoughts_with_logprobs(fake, random_tiny):
    model, tok = random_tiny
    open_id, close_id = think_token_ids(tok)
    backend = vllm_backend.VLLMBackend(model, tok, ThoughtFormat.of(model, tok))
    sampling = Sampling(0.9, top_p=0.95, max_thought_tokens=64)
    (llm,) = fake.LLM.instances
    same = [[1, 5, 6, 7]] * 3  # identical prefixes
    out = backend.generate(same, 4, sampling, generators=keyed_generators(3, [0, 1, 2]))
    prompts, params = next(args for name, args in llm.calls if name == "generate")
    assert prompts == [{"prompt_token_ids": [1, 5, 6, 7, open_id]}] * 3
    assert len({p.seed for p in params}) == 3  # one seed per prefix
    for p in params:
        assert (p.n, p.temperature, p.top_p, p.max_tokens, p.min_tokens) == (4, 0.9, 0.95, 64, 1)
        assert p.stop_token_ids == [close_id] and p.logprobs == 0 and p.detokenize is False
        banned = {open_id, tok.eos_token_id, tok.bos_token_id, tok.pad_token_id, tok.unk_token_id}
        assert p.logit_bias == {t: vllm_backend.BAN for t in banned}  # the one sampler's bans (structure too)
        assert set(vars(p)) <= fake_vllm.field_names(fake_vllm.SamplingParams)
    groups = [tuple(map(tuple, out.ids[i * 4 : i * 4 + 4])) for i in range(3)]
    assert len(set(groups)) == 3  # identical prefixes, different thought groups
    assert len(out.logprobs) == 12
    for ids, shut, lp in zip(out.ids, out.closed.tolist(), out.logprobs):
        assert lp.dtype == torch.float32 and len(lp) == len(ids) + int(shut) and (lp <= 0).all()
        assert close_id not in ids and open_id not in ids and 1 <= len(ids) + int(shut) <= 64
    # 64 draws of ~1% each: some thoughts close and some run out, whatever tokens are banned
    assert out.closed.any() and (~out.closed).any()
    # Reproducible per generator seed: the same keys give the same thoughts and log-probs.
    backend.sync_weights(model)
    again = backend.generate(same, 4, sampling, generators=keyed_generators(3, [0, 1, 2]))
    assert again.ids == out.ids and all(torch.equal(a, b) for a, b in zip(again.logprobs, out.logprobs))


def test_thoughts_from_outputs_reads_stop_tokens_and_logprobs():
    close = 9
    lp = fake_vllm.Logprob
    outs = [
        fake_vllm.RequestOutput(
            "0",
            None,
            [1],
            None,
            [
                fake_vllm.CompletionOutput(
                    0, "", [4, 5, close], -1.0, [{4: lp(-0.5)}, {5: lp(-0.25)}, {close: lp(-0.25)}], "stop", close
                ),
                fake_vllm.CompletionOutput(1, "", [6, 7], -2.0, [{6: lp(-1.0)}, {7: lp(-1.0)}], "length", None),
            ],
            True,
        )
    ]
    th = vllm_backend.thoughts_from_outputs(outs, close, [[1]], 2)
    assert th.prompt_ids == [[1]] and th.n == 2 and th.ids == [[4, 5], [6, 7]] and th.closed.tolist() == [True, False]
    assert th.logprobs[0].tolist() == [-0.5, -0.25, -0.25] and th.logprobs[1].tolist() == [-1.0, -1.0]
    outs[0].outputs[1].logprobs = None
    with pytest.raises(PonderError, match="logprobs=0"):
        vllm_backend.thoughts_from_outputs(outs, close, [[1]], 2)


def test_rlp_trains_with_the_vllm_backend(fake, random_tiny, tmp_path, one_thread):
    from ponder.rl.rlp import RLPConfig, RLPTrainer

    model, tok = random_tiny
    cfg = RLPConfig(
        steps=2, docs_per_step=2, group_size=2, max_thought_tokens=4, context_length=16, generation_backend="vllm"
    )
    source = SimpleNamespace(stream=lambda: iter([("12+34=46", None), ("5+6=11", None)] * 2))
    trainer = RLPTrainer(model, tok, source, cfg, tmp_path)
    for _ in range(2):
        metrics = trainer.train_step()
        assert metrics["thought_tokens_mean"] >= 1 and "loss" in metrics
        # The engine's log-probs are the behaviour policy; the trainer logs how far its own are from them.
        assert "logp_mismatch_abs" in metrics
    assert trainer.recipe.backend.name == "vllm"
    (llm,) = fake.LLM.instances
    assert [name for name, _ in llm.calls].count("update_weights") == 2  # one sync per rollout


def test_clear_errors_without_cuda_or_with_the_policy_on_cpu(fake, random_tiny, monkeypatch):
    model, tok = random_tiny
    monkeypatch.setattr(vllm_backend, "on_cuda", lambda m: False)
    with pytest.raises(PonderError, match="CUDA IPC"):
        vllm_backend.VLLMBackend(model, tok, ThoughtFormat.of(model, tok))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PonderError, match="needs a CUDA GPU"):
        vllm_backend.VLLMBackend(model, tok, ThoughtFormat.of(model, tok))
