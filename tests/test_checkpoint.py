"""Checkpoints are atomic, HF-loadable, and resume exactly."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model
from ponder.train.checkpoint import latest_checkpoint, load_state, save_checkpoint
from ponder.train.metrics import read_metrics
from ponder.train.next_token import NextTokenConfig, lr_lambda, train_next_token

ARCH = TinyArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


def _docs():
    i = 0
    while True:
        yield f"{i % 97}+{(i * 7) % 89}={i % 97 + (i * 7) % 89}"
        i += 1


def test_checkpoint_is_hf_loadable_and_latest_is_complete(tmp_path):
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, ARCH)
    save_checkpoint(tmp_path, 3, model, tok, {"x": 1})
    save_checkpoint(tmp_path, 6, model, tok, {"x": 2})
    # A crash mid-write leaves a hidden temp directory that is never picked up.
    (tmp_path / "checkpoints" / ".step-00000009.tmp123").mkdir()
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step-00000006" and load_state(ckpt)["x"] == 2
    loaded = AutoModelForCausalLM.from_pretrained(ckpt)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert AutoTokenizer.from_pretrained(ckpt)("1+1=")["input_ids"] == tok("1+1=")["input_ids"]


def test_keep_last_prunes(tmp_path):
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, ARCH)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, tok, {}, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000003"]


def test_lr_schedule_warmup_then_cosine():
    cfg = NextTokenConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    f = lr_lambda(cfg)
    assert f(0) == 0.1 and f(9) == 1.0
    assert f(10) == 1.0 and abs(f(60) - 0.55) < 1e-9 and abs(f(110) - 0.1) < 1e-9


def test_resume_reproduces_uninterrupted_run(tmp_path):
    tok = build_char_tokenizer()
    cfg = NextTokenConfig(steps=6, batch_size=4, lr=1e-2, warmup_steps=2, save_every=2, log_every=1, max_length=32)
    full = build_tiny_model(tok, ARCH, seed=1)
    train_next_token(full, tok, _docs, cfg, tmp_path / "full", progress=False)

    # Killed during step 5 (after the step-4 checkpoint): the callback raises mid-run.
    class Killed(Exception):
        pass

    def kill_at_5(step):
        if step == 5:
            raise Killed
        return {}

    part = build_tiny_model(tok, ARCH, seed=1)
    try:
        train_next_token(part, tok, _docs, cfg, tmp_path / "part", on_eval=kill_at_5, eval_every=1, progress=False)
    except Killed:
        pass
    assert latest_checkpoint(tmp_path / "part").name == "step-00000004"
    resumed = build_tiny_model(tok, ARCH, seed=99)  # different init: everything must come from the checkpoint
    summary = train_next_token(resumed, tok, _docs, cfg, tmp_path / "part", resume=True, progress=False)
    assert summary["steps"] == 6
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    steps = [row["step"] for row in read_metrics(tmp_path / "part")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_metrics_log_non_finite_as_null(tmp_path):
    import json

    from ponder.train.metrics import MetricsLogger

    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log(1, {"a": float("nan"), "b": torch.tensor(2.5), "c": float("inf")})
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"step": 1, "a": None, "b": 2.5, "c": None}


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_short_run_writes_weights_only_and_old_checkpoints_are_pruned(tmp_path):
    """final/ holds the weights, config and tokenizer, never optimizer state; a run shorter than save_every writes
    no resumable checkpoint; a checkpointing run keeps the newest keep_checkpoints (default 1) step checkpoints,
    the last step's among them, each with the optimizer state a resume needs."""
    tok = build_char_tokenizer()
    common = dict(batch_size=2, lr=1e-3, warmup_steps=0, max_length=32)
    short = tmp_path / "short"
    train_next_token(build_tiny_model(tok, ARCH), tok, _docs, NextTokenConfig(steps=2, **common), short, progress=False)
    assert not (short / "checkpoints").exists() or not list((short / "checkpoints").glob("step-*"))
    final = _files(short / "final")
    assert "model.safetensors" in final and "config.json" in final and "tokenizer_config.json" in final
    assert not [f for f in final if "trainer_state" in f or "optimizer" in f]

    for keep, kept in ((None, ["step-00000003"]), (2, ["step-00000002", "step-00000003"])):
        run = tmp_path / f"keep{keep}"
        cfg = NextTokenConfig(steps=3, save_every=1, **common, **({} if keep is None else {"keep_checkpoints": keep}))
        train_next_token(build_tiny_model(tok, ARCH), tok, _docs, cfg, run, progress=False)
        assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == kept
        assert "optimizer" in load_state(run / "checkpoints" / kept[-1])
        assert not [f for f in _files(run / "final") if "trainer_state" in f]


def test_a_checkpoint_of_the_former_next_token_loop_is_refused_in_one_line(tmp_path):
    """Its state (no engine counters, no recipe state) is refused with what to do, never half-resumed."""
    from ponder.train.checkpoint_checks import CheckpointError

    tok = build_char_tokenizer()
    model = build_tiny_model(tok, ARCH)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    old = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "docs_consumed": 4, "tokens_seen": 40}
    save_checkpoint(tmp_path, 2, model, tok, old)
    cfg = NextTokenConfig(steps=3, batch_size=2, max_length=32, warmup_steps=0)
    with pytest.raises(CheckpointError, match="--no-resume"):
        train_next_token(model, tok, _docs, cfg, tmp_path, resume=True, progress=False)
