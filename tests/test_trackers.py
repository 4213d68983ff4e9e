"""Trackers: one ``report_to`` setting, the same metric names in JSONL, TensorBoard and W&B (offline, real wandb)."""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import pytest

from ponder.errors import PonderError
from ponder.train.metrics import MetricsLogger
from ponder.train.trackers import TrackingSettings, finite_scalars


def test_report_to_is_validated_and_deduplicated():
    assert TrackingSettings().report_to == ["tensorboard"]
    assert TrackingSettings(report_to=["WandB", "tensorboard", "wandb"]).report_to == ["wandb", "tensorboard"]
    assert TrackingSettings(report_to=["none"]).report_to == []
    with pytest.raises(ValueError, match="unknown tracker 'mlflow'"):
        TrackingSettings(report_to=["mlflow"])


def test_report_to_flag_on_the_training_jobs():
    from ponder.cli import build_parser
    from ponder.config import config_from_args
    from ponder.jobs.grpo import GRPOJob
    from ponder.jobs.rlp import CPTJob, RLPJob

    parser = build_parser()
    for command, job_cls in (("rlp", RLPJob), ("cpt", CPTJob), ("grpo", GRPOJob)):
        args = parser.parse_args([command, "--report-to", "tensorboard,wandb"])
        assert config_from_args(job_cls, args).report_to == ["tensorboard", "wandb"]
    assert config_from_args(RLPJob, parser.parse_args(["rlp"])).report_to == ["tensorboard"]


def test_finite_scalars_keeps_plottable_numbers():
    row = {"step": 3, "loss": 0.5, "n": 2, "nan": math.nan, "none": None, "flag": True, "name": "x"}
    assert finite_scalars(row) == {"loss": 0.5, "n": 2}


def wandb_history(run_dir: Path) -> list[dict]:
    """History rows of the offline W&B run under ``run_dir`` (its .wandb file: a LevelDB-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))[-1:]
    data, pos, pending, rows = path.read_bytes(), 7, b"", []  # 7: the ':W&B' header
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
    return rows


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))


def test_same_metric_names_in_jsonl_tensorboard_and_wandb(tmp_path, offline_wandb):
    run = tmp_path / "run"
    log = MetricsLogger(run, report_to=["tensorboard", "wandb"], config={"lr": 0.001})
    log.log(1, {"loss": 2.0, "reward_mean": 0.25, "info_gain_answer": math.nan})
    log.log(2, {"loss": 1.5, "reward_mean": 0.5, "info_gain_answer": 0.125})
    log.close()
    jsonl = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert jsonl[0] == {"step": 1, "loss": 2.0, "reward_mean": 0.25, "info_gain_answer": None}
    tb = tensorboard_scalars(run)
    assert tb == {"loss": [(1, 2.0), (2, 1.5)], "reward_mean": [(1, 0.25), (2, 0.5)], "info_gain_answer": [(2, 0.125)]}
    history = wandb_history(run)
    plotted = [{k: v for k, v in row.items() if not k.startswith("_")} for row in history]
    assert plotted == [{"loss": 2.0, "reward_mean": 0.25}, {"loss": 1.5, "reward_mean": 0.5, "info_gain_answer": 0.125}]
    assert [row["_step"] for row in history] == [1, 2]
    assert {k for row in jsonl for k in row if k != "step"} == set(tb) == {k for row in plotted for k in row}
    # A resumed run keeps its W&B run id (and TensorBoard/JSONL keep their files).
    run_id = (run / "wandb-run-id").read_text()
    again = MetricsLogger(run, resume_step=2, report_to=["wandb"])
    again.log(3, {"loss": 1.0})
    again.close()
    assert (run / "wandb-run-id").read_text() == run_id
    assert len(list(run.glob(f"wandb/offline-run-*-{run_id}"))) >= 1


def test_wandb_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(PonderError, match=r"ponder\[wandb\]"):
        MetricsLogger(tmp_path, report_to=["wandb"])


def test_no_tracker_writes_only_jsonl(tmp_path):
    log = MetricsLogger(tmp_path, report_to=[])
    log.log(1, {"loss": 1.0})
    log.close()
    assert (tmp_path / "metrics.jsonl").is_file() and not (tmp_path / "tb").exists()
