"""Configs validate and name the bad key; the CLI turns user errors into one paragraph and exit 2."""

import pytest
from pydantic import BaseModel, ConfigDict, Field

from ponder.cli import main
from ponder.config import build_config
from ponder.errors import ConfigError
from ponder.jobs.base import BaseJob
from ponder.jobs.evaluate import EvalJob


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-3, gt=0)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = 10
    inner: Inner = Inner()


def test_yaml_and_overrides_merge(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\ninner:\n  lr: 0.5\n")
    cfg = build_config(Outer, path, {"inner.lr": 0.25})
    assert cfg.steps == 5 and cfg.inner.lr == 0.25


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: Inner = Inner(lr=0.5)
    other: Outer = Outer(steps=3)


def test_nested_flags_keep_the_jobs_own_nested_defaults(tmp_path):
    """Setting one nested field keeps the job's defaults of the others, not the nested class's."""
    assert build_config(Job).inner.lr == 0.5 and build_config(Job).other.steps == 3
    cfg = build_config(Job, None, {"other.inner.lr": 0.1})
    assert cfg.inner.lr == 0.5 and cfg.other.steps == 3 and cfg.other.inner.lr == 0.1
    path = tmp_path / "c.yaml"
    path.write_text("other:\n  steps: 7\n")
    cfg = build_config(Job, path)
    assert cfg.other.steps == 7 and cfg.inner.lr == 0.5
    base = build_config(BaseJob, None, {"train.steps": 10})
    assert base.train == BaseJob().train.model_copy(update={"steps": 10})


def test_every_job_builds_to_its_defaults():
    from ponder.jobs.audit import AuditJob
    from ponder.jobs.demo import DemoJob
    from ponder.jobs.grpo import GRPOJob, TTRLJob
    from ponder.jobs.plan import PlanJob
    from ponder.jobs.rlp import CPTJob, RLPJob
    from ponder.jobs.trelawney import TrelawneyJob

    for job in (BaseJob, EvalJob, RLPJob, CPTJob, GRPOJob, TTRLJob, DemoJob, AuditJob, PlanJob, TrelawneyJob):
        assert build_config(job) == job(), job.__name__


def test_help_shows_the_jobs_nested_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["base", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--train.max-length MAX_LENGTH tokens per document (longer ones are truncated) (default: 128)" in help_text


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 5\n")
    with pytest.raises(ConfigError, match=r"stepz: unknown key"):
        build_config(Outer, path)


def test_wrong_type_names_nested_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lr: -1\n")
    with pytest.raises(ConfigError, match=r"inner\.lr: Input should be greater than 0"):
        build_config(Outer, path)


def test_non_mapping_yaml_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(Outer, path)


def test_base_fingerprint_tracks_recipe_not_output():
    a, b = BaseJob(), BaseJob(out="/elsewhere", eval_n=3)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != BaseJob(seed=1).fingerprint()
    assert a.fingerprint() != BaseJob(lazy_thoughts=0.5).fingerprint()


def test_cli_config_error_exit_code(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("modle: tiny\n")
    assert main(["eval", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "modle: unknown key" in err and "Traceback" not in err


def test_cli_unknown_task_lists_known(capsys):
    assert main(["eval", "--task", "nope", "--model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "add4" in err and "Traceback" not in err


def test_cli_missing_model_path(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "missing"), "--n", "1"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_gguf_without_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert main(["eval", "--model", str(f), "--n", "1"]) == 2
    assert "ponder[gguf]" in capsys.readouterr().err


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    for name in EvalJob.model_fields:
        assert "--" + name.replace("_", "-") in out


def test_list_fields_take_comma_separated_values():
    import argparse

    from ponder.config import add_model_arguments, config_from_args
    from ponder.jobs.demo import DemoJob

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_model_arguments(parser, DemoJob)
    job = config_from_args(DemoJob, parser.parse_args(["--seeds", "3,4", "--rlp.group-size", "4"]))
    assert job.seeds == [3, 4] and job.rlp.group_size == 4


def test_cli_reasoning_gym_missing_says_which_extra(monkeypatch, capsys):
    import ponder.data.reasoning_gym as rg

    def missing():
        raise ImportError(
            f"reasoning-gym tasks (rg:<name>) need the optional 'reasoning-gym' package: {rg.INSTALL_HINT}"
        )

    monkeypatch.setattr(rg, "_import_reasoning_gym", missing)
    assert main(["eval", "--task", "rg:basic_arithmetic", "--n", "1"]) == 2
    err = capsys.readouterr().err
    assert "ponder[tasks]" in err and "Traceback" not in err
