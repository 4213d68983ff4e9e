"""Configs validate and name the bad key; the CLI turns user errors into one paragraph and exit 2."""

import pytest
from pydantic import BaseModel, ConfigDict, Field

from ponder.cli import main
from ponder.config import build_config
from ponder.errors import ConfigError
from ponder.jobs.eval import EvalJob
from ponder.models.tiny_base import BaseJob


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


def test_a_nested_flag_or_yaml_key_overrides_only_that_field(tmp_path):
    from ponder.jobs.demo import DemoJob

    job = build_config(DemoJob, None, {"rlp.steps": 5})
    assert job.rlp.steps == 5
    assert job.rlp.model_dump(exclude={"steps"}) == DemoJob().rlp.model_dump(exclude={"steps"})
    assert job.rlp.lr == 3e-5 and job.rlp.position_weighting == "think_prob" and job.rlp.context_length == 128
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.5\n")
    base = build_config(BaseJob, path, {"train.steps": 7})
    assert base.train.lr == 0.5 and base.train.steps == 7
    assert base.train.model_dump(exclude={"lr", "steps"}) == BaseJob().train.model_dump(exclude={"lr", "steps"})


HELP_JOBS = [
    "base",
    "eval",
    "rlp",
    "cpt",
    "grpo",
    "ttrl",
    "demo",
    "audit",
    "plan",
    "trelawney",
    "early-experience",
    "thought-mdp",
]


def _leaf_defaults(model: BaseModel, prefix: str = "") -> dict[str, str]:
    """``--flag`` -> str(effective default) of every scalar setting of a job's default instance (a description that
    states its own default, such as "(default: from the task, else 256)", is shown as written)."""
    from ponder.config import _scalar_type

    out = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(_leaf_defaults(value, f"{prefix}{name}."))
        elif "(default:" in (field.description or ""):
            out["--" + f"{prefix}{name}".replace("_", "-")] = field.description.rsplit("(default: ", 1)[1][:-1]
        elif _scalar_type(field.annotation) is not None:
            out["--" + f"{prefix}{name}".replace("_", "-")] = str(value)
    return out


@pytest.mark.parametrize("job", HELP_JOBS)
def test_help_shows_each_jobs_effective_defaults(job, capsys, monkeypatch):
    import re

    from ponder.cli import build_parser

    monkeypatch.setenv("COLUMNS", "100000")  # one line per flag
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[job]
    expected = _leaf_defaults(sub.get_default("config_cls")())
    with pytest.raises(SystemExit):
        main([job, "--help"])
    shown = {}
    entries = re.split(r"\n(?=  -)", capsys.readouterr().out)
    for entry in entries:
        flag = entry.split()[0].rstrip(",")
        found = re.findall(r".*\(default: (.*)\)$", " ".join(entry.split()))
        if flag in expected and found:
            shown[flag] = found[-1]
    assert shown == expected


def test_a_one_process_command_under_a_multi_rank_launcher_is_one_line_error(monkeypatch, tmp_path, capsys):
    """torchrun of a command without data parallelism: refused before any rank writes, not a lock race."""
    from ponder import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["plan", "--model", "tiny", "--out", str(tmp_path / "p")]) == 2
    captured = capsys.readouterr()
    err = captured.err + captured.out
    assert "ponder plan runs in one process" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()
    for command in cli.DATA_PARALLEL_COMMANDS:  # these join the process group instead
        cli.check_launch(command, {"WORLD_SIZE": "2"})
    cli.check_launch("eval", {"WORLD_SIZE": "1"})
    cli.check_launch("eval", {})
