"""Run directories: pickle-free verified checkpoints, locking, resume checks and what a run records."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch

from ponder.cli import main
from ponder.errors import PonderError
from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model
from ponder.train.checkpoint import (
    STATE_JSON,
    STATE_TENSORS,
    latest_checkpoint,
    load_state,
    remove_stale_temporaries,
    restore_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from ponder.train.metrics import MetricsLogger, read_metrics
from ponder.train.rundir import altering_changes, config_changes, environment, run_lock
from ponder.train.state import decode_state, encode_state

ARCH = TinyArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
RLP = ["--task", "add2", "--docs-per-step", "2", "--group-size", "2", "--max-thought-tokens", "4",
       "--context-length", "32", "--save-every", "1", "--quiet"]  # fmt: skip


def _adam_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return model, opt


def test_state_round_trips_types_through_json_and_safetensors():
    _, opt = _adam_state()
    state = {"optimizer": opt.state_dict(), "t": (1, 2.5, None), "keys": {3: "a"}, "flag": True, "x": float("nan")}
    tensors: dict = {}
    back = decode_state(json.loads(json.dumps(encode_state(state, tensors))), tensors)
    assert back["t"] == (1, 2.5, None) and back["keys"] == {3: "a"} and back["flag"] is True
    assert back["x"] != back["x"]
    assert set(back["optimizer"]["state"]) == {0, 1}  # int parameter ids, or load_state_dict drops the moments
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    torch.testing.assert_close(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(TypeError, match="without pickling"):
        encode_state({"f": object()}, {})


def test_checkpoint_holds_no_pickle_and_restores_optimizer_and_rngs(tmp_path):
    import random

    import numpy as np

    tok = build_char_tokenizer()
    model, opt = _adam_state()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    hf = build_tiny_model(tok, ARCH)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt = save_checkpoint(tmp_path, 1, hf, tok, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert not list(ckpt.rglob("*.pt")) and not list(ckpt.rglob("*.bin"))
    assert (ckpt / STATE_JSON).is_file() and (ckpt / STATE_TENSORS).is_file()
    model2, opt2 = _adam_state()
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0)
    state = restore_checkpoint(ckpt, build_tiny_model(tok, ARCH, seed=5), opt2, sched2)
    assert state["step"] == 1
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_resume_keeps_the_configured_lr(tmp_path):
    tok = build_char_tokenizer()
    _, opt = _adam_state()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    sched.step()
    ckpt = save_checkpoint(
        tmp_path, 1, build_tiny_model(tok, ARCH), tok, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    )
    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.02, betas=(0.8, 0.9))
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 0.5)
    restore_checkpoint(ckpt, build_tiny_model(tok, ARCH), opt2, sched2)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01) and sched2.base_lrs == [0.02]
    assert len(opt2.state) == 2  # the moments still come from the checkpoint


def test_verification_falls_back_past_damage_and_says_why(tmp_path):
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, ARCH)
    for step in (1, 2):
        save_checkpoint(tmp_path, step, model, tok, {"x": step})
    newest = tmp_path / "checkpoints" / "step-00000002"
    assert verify_checkpoint(newest) is None
    (newest / "tokenizer.json").write_text("{}")
    said = []
    assert latest_checkpoint(tmp_path, report=said.append).name == "step-00000001"
    assert "tokenizer.json does not match its checksum" in said[0]
    (tmp_path / "checkpoints" / "step-00000001" / STATE_TENSORS).unlink()
    with pytest.raises(PonderError, match="no intact checkpoint"):
        latest_checkpoint(tmp_path, report=said.append)


def test_a_legacy_pickled_state_is_never_loaded(tmp_path):
    ckpt = tmp_path / "step-00000001"
    ckpt.mkdir()
    (ckpt / "trainer_state.pt").write_bytes(b"\x80\x04.")
    assert "older ponder" in verify_checkpoint(ckpt)
    with pytest.raises(PonderError, match="a pickle can run code"):
        load_state(ckpt)


def test_stale_temporaries_are_removed_and_an_orphaned_old_copy_restored(tmp_path):
    root = tmp_path / "checkpoints"
    for name in (".step-00000003.tmp99", ".step-00000002.old98", ".latest.tmp97"):
        (root / name).mkdir(parents=True) if "latest" not in name else (root / name).write_text("x")
    (tmp_path / ".final.tmp96").mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".final.tmp96", ".latest.tmp97", ".step-00000003.tmp99"]
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002"]


def test_a_cut_last_metrics_line_is_dropped_with_a_warning(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a"')
    MetricsLogger(tmp_path, resume_step=2, tensorboard=False).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    assert "dropped its last line" in capsys.readouterr().err


def test_lock_is_exclusive_and_a_dead_holders_lock_is_taken_over(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(PonderError, match=f"PID {os.getpid()}"):
            with run_lock(tmp_path):
                pass
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a holder killed while holding the lock
        with run_lock(tmp_path):
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert (tmp_path / ".lock").read_text().strip() == str(pid)  # its PID is still written there
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_config_changes_name_old_and_new_values_and_spare_what_may_change():
    from ponder.jobs.rlp import RLPJob

    saved = RLPJob().model_dump(mode="json")
    changes = config_changes(saved, RLPJob(lr=0.5, steps=300, log_every=5, seed=2))
    assert changes == {"lr": (1e-6, 0.5), "steps": (100, 300), "log_every": (1, 5), "seed": (0, 2)}
    assert altering_changes(changes) == {"lr": (1e-6, 0.5), "seed": (0, 2)}
    del saved["kl_coef"]  # a setting the saved run did not know yet: a change only if not its default
    assert config_changes(saved, RLPJob()) == {} and "kl_coef" in config_changes(saved, RLPJob(kl_coef=0.1))


def test_resume_checks_record_and_allow_config_changes(tmp_path, tiny_hf_dir, one_thread, capsys):
    out = tmp_path / "run"
    argv = ["rlp", "--model", str(tiny_hf_dir), "--out", str(out), *RLP]
    assert main([*argv, "--steps", "2"]) == 0
    assert main([*argv, "--steps", "3"]) == 0  # extending a run is no change of what it computes
    assert main([*argv, "--steps", "4", "--lr", "1e-3"]) == 2
    assert "lr: 1e-06 -> 0.001" in capsys.readouterr().err
    assert main([*argv, "--steps", "4", "--lr", "1e-3", "--allow-config-change"]) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["lr"] == pytest.approx(1e-3)
    record = json.loads((out / "run.json").read_text())
    starts = record["starts"]
    assert record["job"] == "rlp" and len(starts) == 3  # the refused start changed nothing
    assert starts[1]["config_changes"] == {"steps": [2, 3]}
    assert starts[2]["config_changes"] == {"steps": [3, 4], "lr": [1e-06, 0.001]}
    env = starts[0]["environment"]
    assert env["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    assert env["torch_threads"] == 1 and env["device"] == "cpu" and env["python"]
    assert json.loads((out / "rlp_job.json").read_text())["lr"] == 1e-3
    # --no-resume starts over: the previous run's checkpoints are gone, so no later resume mixes them in.
    assert main([*argv, "--steps", "1", "--no-resume"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-00000001"]


def test_environment_names_versions_threads_and_device():
    env = environment("cpu")
    assert env["packages"]["transformers"] and env["packages"]["ponder"]
    assert env["torch_threads"] == torch.get_num_threads() and env["device"] == "cpu"


def test_demo_out_is_checked_before_the_base_is_trained(tmp_path, monkeypatch):
    import ponder.jobs.demo as demo

    monkeypatch.setattr(demo, "ensure_lazy_tiny", lambda **k: pytest.fail("work began before the out check"))
    shutil.copy(__file__, tmp_path / "file")
    assert main(["demo", "--out", str(tmp_path / "file"), "--quiet"]) == 2
