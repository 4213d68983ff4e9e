"""Every bad input exits 2 with one line saying what is wrong and what to do, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ponder.cli import main
from ponder.train.rundir import run_lock

RLP_FLAGS = ["--task", "add2", "--steps", "2", "--docs-per-step", "2", "--group-size", "2", "--max-thought-tokens",
             "4", "--context-length", "32", "--save-every", "1", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_rlp(tmp_path_factory, tiny_hf_dir) -> Path:
    """A finished two-step ``ponder rlp`` run directory (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "rlp"
    assert main(["rlp", "--model", str(tiny_hf_dir), "--out", str(out), *RLP_FLAGS]) == 0
    return out


def _model_copy(tmp: Path, src: Path, damage) -> str:
    d = tmp / "model"
    shutil.copytree(src, d)
    damage(d)
    return str(d)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bigbench(tmp: Path, examples: list) -> str:
    path = tmp / "task.json"
    path.write_text(json.dumps({"examples": examples}))
    return str(path)


def _run_copy(tmp: Path, run: Path) -> Path:
    out = tmp / "run"
    shutil.copytree(run, out)
    return out


def _file(tmp: Path) -> str:
    path = tmp / "a-file"
    path.write_text("x")
    return str(path)


def _rlp(model, out, *extra) -> list[str]:
    return ["rlp", "--model", str(model), "--out", str(out), *RLP_FLAGS, *extra]


def _damage_all_checkpoints(tmp: Path, run: Path) -> Path:
    out = _run_copy(tmp, run)
    for f in (out / "checkpoints").glob("step-*/trainer_state.json"):
        f.write_text("{}")
    return out


def _legacy_checkpoint(tmp: Path, run: Path) -> Path:
    out = _run_copy(tmp, run)
    for d in (out / "checkpoints").glob("step-*"):
        for name in ("trainer_state.json", "trainer_state.safetensors", "manifest.json"):
            (d / name).unlink()
        (d / "trainer_state.pt").write_bytes(b"\x80\x04K\x01.")
    return out


def _damaged_metrics(tmp: Path, run: Path) -> Path:
    out = _run_copy(tmp, run)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(["{cut", *lines]) + "\n")
    return out


# name -> argv builder (tmp, model dir, finished rlp run)
CASES = {
    "lr inf": lambda t, m, r: _rlp(m, t / "o", "--lr", "inf"),
    "weight decay inf": lambda t, m, r: ["grpo", "--model", str(m), "--weight-decay", "inf", "--out", str(t / "o")],
    "nested lr nan": lambda t, m, r: ["base", "--train.lr", "nan", "--out", str(t / "o")],
    "empty safetensors": lambda t, m, r: [
        "eval", "--model", _model_copy(t, m, lambda d: (d / "model.safetensors").write_bytes(b"")), "--n", "1"],
    "truncated safetensors": lambda t, m, r: [
        "eval", "--model", _model_copy(t, m, lambda d: _truncate(d / "model.safetensors")), "--n", "1"],
    "invalid config.json": lambda t, m, r: [
        "eval", "--model", _model_copy(t, m, lambda d: (d / "config.json").write_text("{nope")), "--n", "1"],
    "target_scores a list": lambda t, m, r: [
        "eval", "--model", str(m), "--task", _bigbench(t, [{"input": "a", "target_scores": ["x"]}])],
    "target_scores a string score": lambda t, m, r: [
        "eval", "--model", str(m), "--task", _bigbench(t, [{"input": "a", "target_scores": {"x": "high"}}])],
    "target_scores empty": lambda t, m, r: [
        "eval", "--model", str(m), "--task", _bigbench(t, [{"input": "a", "target_scores": {}}])],
    "target empty list": lambda t, m, r: [
        "eval", "--model", str(m), "--task", _bigbench(t, [{"input": "a", "target": []}])],
    "single example eval": lambda t, m, r: [
        "eval", "--model", str(m), "--task", _bigbench(t, [{"input": "a", "target": "b"}]), "--n", "1"],
    "single example grpo": lambda t, m, r: [
        "grpo", "--model", str(m), "--task", _bigbench(t, [{"input": "a", "target": "b"}]), "--out", str(t / "o")],
    "demo seeds ,": lambda t, m, r: ["demo", "--seeds", ",", "--out", str(t / "o")],
    "demo seeds backwards": lambda t, m, r: ["demo", "--seeds", "5-3", "--out", str(t / "o")],
    "demo seeds not numbers": lambda t, m, r: ["demo", "--seeds", "0-x", "--out", str(t / "o")],
    "out is a file": lambda t, m, r: _rlp(m, _file(t)),
    "out under a file": lambda t, m, r: _rlp(m, _file(t) + "/run"),
    "audit out is a file": lambda t, m, r: ["audit", "--model", str(m), "--out", _file(t)],
    "plan out is a file": lambda t, m, r: ["plan", "--model", str(m), "--out", _file(t)],
    "json is a folder": lambda t, m, r: ["eval", "--model", str(m), "--n", "1", "--json", str(t)],
    "json under a file": lambda t, m, r: ["audit", "--model", str(m), "--out", str(t / "o"), "--json", _file(t) + "/x"],
    "cpt on an rlp run": lambda t, m, r: ["cpt", "--model", str(m), "--out", str(_run_copy(t, r))],
    "ttrl on an rlp run": lambda t, m, r: ["ttrl", "--model", str(m), "--out", str(_run_copy(t, r))],
    "resume with another lr and seed": lambda t, m, r: _rlp(m, _run_copy(t, r), "--lr", "0.5", "--seed", "3"),
    "resume with another corpus": lambda t, m, r: _rlp(m, _run_copy(t, r), "--task", "add3"),
    "every checkpoint damaged": lambda t, m, r: _rlp(m, _damage_all_checkpoints(t, r), "--steps", "3"),
    "pickled checkpoint of an older ponder": lambda t, m, r: _rlp(m, _legacy_checkpoint(t, r), "--steps", "3"),
    "damaged metrics line": lambda t, m, r: _rlp(m, _damaged_metrics(t, r), "--steps", "3"),
    "match-run without a summary": lambda t, m, r: [
        "cpt", "--model", str(m), "--match-run", str(t), "--out", str(t / "o")],
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(name, tmp_path, tiny_hf_dir, finished_rlp, one_thread, capsys):
    argv = CASES[name](tmp_path, tiny_hf_dir, finished_rlp)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert "Traceback" not in err


def test_a_locked_run_directory_names_the_holder(tmp_path, tiny_hf_dir, finished_rlp, capsys):
    out = _run_copy(tmp_path, finished_rlp)
    with run_lock(out):
        assert main(_rlp(tiny_hf_dir, out)) == 2
    err = capsys.readouterr().err
    assert f"in use by another ponder process (PID {os.getpid()})" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused_before_any_work(tmp_path, tiny_hf_dir, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(_rlp(tiny_hf_dir, ro / "run")) == 2
    finally:
        ro.chmod(0o700)
    assert "Permission denied" in capsys.readouterr().err


# ---------------------------------------------------------------------------- issue 30
def _write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def _wrong_vocabulary(tmp: Path, model: Path) -> str:
    def damage(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        config["vocab_size"] += 400  # the embedding in model.safetensors keeps the old size
        (d / "config.json").write_text(json.dumps(config))

    return _model_copy(tmp, model, damage)


def _dangling_link(tmp: Path) -> str:
    link = tmp / "out-link"
    link.symlink_to(tmp / "missing" / "run")
    return str(link)


# name -> (argv builder (tmp, model dir), words the one line must hold)
ONE_LINE_ONLY = {
    "junk gguf": (lambda t, m: ["eval", "--model", _write(t, "junk.gguf", b"not a gguf file"), "--n", "1"], "GGUF"),
    "config not UTF-8": (
        lambda t, m: _rlp(m, t / "o", "--config", _write(t, "bad.yaml", b"lr: 0.001\nseed: \xff\n")), "UTF-8"),
    "config key twice": (
        lambda t, m: _rlp(m, t / "o", "--config", _write(t, "twice.yaml", b"lr: 0.001\nseed: 1\nlr: 0.1\n")),
        "'lr' appears twice"),
    "seed out of range": (lambda t, m: _rlp(m, t / "o", "--seed", "99999999999999999999"), "seed"),
    "negative seed": (lambda t, m: _rlp(m, t / "o", "--seed", "-1"), "seed"),
    "steps out of range": (lambda t, m: _rlp(m, t / "o", "--steps", str(2**63)), "steps"),
    "wrong-vocabulary model": (lambda t, m: ["eval", "--model", _wrong_vocabulary(t, m), "--n", "1"], "MISMATCH"),
    "dangling --out link": (lambda t, m: _rlp(m, _dangling_link(t)), "does not exist"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ONE_LINE_ONLY))
def test_bad_input_prints_only_its_one_line(name, tmp_path, tiny_hf_dir, one_thread, capfd):
    build, words = ONE_LINE_ONLY[name]
    argv = build(tmp_path, tiny_hf_dir)
    capfd.readouterr()
    assert main([*argv, "--quiet"]) == 2
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], out + err


def test_a_corpus_run_prints_no_sequence_length_warning(tmp_path, tiny_hf_dir, one_thread):
    import logging

    model = _model_copy(tmp_path, tiny_hf_dir, lambda d: None)
    config_path = Path(model) / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = 64  # a document of the corpus is longer: it is read as windows
    config_path.write_text(json.dumps(config))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("12+34=46 " * 40)

    class Collect(logging.Handler):  # transformers' own handler writes to the stream it found at import
        messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    handler = Collect()
    logging.getLogger("transformers").addHandler(handler)
    try:
        argv = ["rlp", "--model", model, "--corpus", str(corpus), "--out", str(tmp_path / "o"), *RLP_FLAGS]
        assert main(argv) == 0
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not [m for m in handler.messages if "Token indices sequence length" in m]


def test_help_shows_each_default_once(capsys, monkeypatch):
    import re

    from ponder.cli import build_parser

    monkeypatch.setenv("COLUMNS", "100000")  # one line per flag
    commands = [
        name for name in build_parser()._subparsers._group_actions[0].choices if name not in ("tasks", "corpus")
    ]
    for name in commands:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        for entry in re.split(r"\n(?=  -)", capsys.readouterr().out):
            assert entry.count("(default:") <= 1, (name, " ".join(entry.split()))
