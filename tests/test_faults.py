"""Kill -9, damaged checkpoints and planted pickles: every training job ends with the weights of an
uninterrupted run, and nothing in a run directory executes code.

A killed run is the CLI in a forked child process that SIGKILLs itself at a fault point
(``PONDER_FAULT``, see :mod:`ponder.train.checkpoint`): ``before-save:N`` as checkpoint N is about
to be written (the state of step N is lost, as in a kill during step N+1), ``mid-save:N`` inside
the write of checkpoint N. Forking keeps each kill to a fraction of a second (no interpreter start).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ponder.cli import main
from ponder.train.checkpoint import MANIFEST, write_manifest

pytestmark = pytest.mark.slow  # seconds each: every job trains and is killed twice

STEPS = 4
JOBS = ("rlp", "grpo", "ttrl", "cpt", "base")


def job_argv(job: str, model_dir: Path, out: Path, steps: int = STEPS) -> list[str]:
    """A seconds-long run of ``job`` that checkpoints every step and keeps the last two checkpoints."""
    m, n = str(model_dir), str(steps)
    keep = ["--train.keep-checkpoints" if job == "base" else "--keep-checkpoints", "2"]
    common = ["--out", str(out), "--quiet", *keep]
    if job == "rlp":
        return ["rlp", "--model", m, "--task", "add2", "--steps", n, "--docs-per-step", "2", "--group-size", "2",
                "--max-thought-tokens", "4", "--context-length", "32", "--lr", "1e-3", "--save-every", "1", *common]  # fmt: skip
    if job in ("grpo", "ttrl"):
        extra = ["--group-size", "3", "--train-samples", "2"] if job == "ttrl" else ["--group-size", "2"]
        return [job, "--model", m, "--task", "add2", "--reward", "self_certainty", "--steps", n, "--prompts-per-step", "2",
                "--pool-size", "4", "--max-thought-tokens", "4", "--max-answer-tokens", "3", "--eval-n", "0",
                "--lr", "1e-3", "--save-every", "1", *extra, *common]  # fmt: skip
    if job == "cpt":
        return ["cpt", "--model", m, "--task", "add2", "--steps", n, "--batch-size", "2", "--max-length", "32",
                "--lr", "1e-3", "--warmup-steps", "1", "--save-every", "1", *common]  # fmt: skip
    return ["base", "--task", "add2", "--arch.hidden-size", "32", "--arch.num-layers", "1", "--arch.num-heads", "2",
            "--arch.intermediate-size", "64", "--arch.max-positions", "64", "--train.steps", n, "--train.batch-size",
            "2", "--train.max-length", "32", "--train.warmup-steps", "1", "--train.save-every", "1", "--eval-n", "1",
            *common]  # fmt: skip


def run_killed(argv: list[str], fault: str) -> None:
    """Run the CLI in a child process that SIGKILLs itself at ``fault``; fail if it ends any other way."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 3
        try:
            os.environ["PONDER_FAULT"] = fault
            code = main(argv)
        finally:
            os._exit(code if isinstance(code, int) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{argv[0]} at {fault}: status {status}"


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def leftovers(run: Path) -> list[str]:
    return [p.name for folder in (run, run / "checkpoints") for p in folder.glob(".*") if p.name != ".lock"]


@pytest.mark.parametrize("job", JOBS)
def test_kill_at_a_step_and_during_a_write_then_damage_resumes_exactly(job, tmp_path, tiny_hf_dir, one_thread, capsys):
    rng = random.Random(f"faults:{job}")
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(job_argv(job, tiny_hf_dir, full)) == 0
    reference = weights(full)
    if job != "base":  # the run trains: an equality below cannot hold by accident
        start = load_file(str(tiny_hf_dir / "model.safetensors"))
        assert max_abs_diff({k: start[k] for k in reference}, reference) > 0

    kill_step = rng.randint(1, STEPS - 1)
    run_killed(job_argv(job, tiny_hf_dir, part), f"before-save:{kill_step}")
    write_step = rng.randint(kill_step, STEPS)
    run_killed(job_argv(job, tiny_hf_dir, part), f"mid-save:{write_step}")
    assert any(name.startswith(f".step-{write_step:08d}.tmp") for name in leftovers(part))
    assert main(job_argv(job, tiny_hf_dir, part)) == 0
    assert leftovers(part) == []
    assert max_abs_diff(reference, weights(part)) == 0

    # Damage the newest checkpoint: the rerun skips it, resumes from the one before and ends the same.
    newest = part / "checkpoints" / f"step-{STEPS:08d}" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    capsys.readouterr()
    assert main(job_argv(job, tiny_hf_dir, part)) == 0
    err = capsys.readouterr().err
    assert f"skipping checkpoint {newest.parent}" in err and "does not match its checksum" in err
    assert max_abs_diff(reference, weights(part)) == 0


class _Planted:
    """Unpickling this creates the file ``path``: proof that a loader ran code from the run directory."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_a_pickle_planted_in_any_file_of_a_run_directory_never_runs(tmp_path, tiny_hf_dir, one_thread):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Planted(marker))
    pickle.loads(payload)  # the payload works when unpickled ...
    assert marker.exists()
    marker.unlink()
    run = tmp_path / "run"
    argv = job_argv("rlp", tiny_hf_dir, run, steps=2)
    argv[argv.index("--save-every") + 1] = "2"
    assert main(argv) == 0
    files = sorted(p.relative_to(run) for p in run.rglob("*") if p.is_file())
    assert len(files) >= 20
    for rel in files:
        case = tmp_path / "cases" / str(rel).replace("/", "_")
        shutil.copytree(run, case)
        (case / rel).write_bytes(payload)
        for manifest in case.rglob(MANIFEST):  # checksums that match: the loaders themselves must refuse
            if manifest != case / rel:
                write_manifest(manifest.parent)
        codes = []  # the other readers of the file first: resuming rewrites final/ and the summary
        if rel.parts[0] == "final":
            codes.append(main(["eval", "--model", str(case / "final"), "--n", "1", "--quiet"]))
        if rel.name == "rlp_summary.json":
            codes.append(main(["cpt", "--model", str(tiny_hf_dir), "--match-run", str(case), "--out",
                               str(tmp_path / "cpt" / case.name), "--quiet"]))  # fmt: skip
        codes.append(main([*argv[: argv.index("--out")], "--out", str(case), "--quiet"]))
        assert not marker.exists(), f"a pickle planted in {rel} ran"
        assert set(codes) <= {0, 2}, f"{rel}: exit codes {codes}"


# ---------------------------------------------------------------------------- run directories (issue 30)
def rlp_argv(model_dir: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [*job_argv("rlp", model_dir, out, steps=steps), *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links as their target's name), without the lock file."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = f"-> {os.readlink(p)}".encode()
        elif p.is_file() and rel != ".lock":
            out[rel] = p.read_bytes()
    return out


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_hf_dir) -> Path:
    """A finished two-step RLP run with a checkpoint at each step (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    torch.set_num_threads(1)
    assert main(rlp_argv(tiny_hf_dir, out, 2)) == 0
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_hf_dir) -> dict[int, dict[str, torch.Tensor]]:
    """Final weights of uninterrupted RLP runs of 3 and 4 steps (what every resume below must end with)."""
    torch.set_num_threads(1)
    out = {}
    for steps in (3, 4):
        run = tmp_path_factory.mktemp(f"reference{steps}") / "run"
        assert main(rlp_argv(tiny_hf_dir, run, steps)) == 0
        out[steps] = weights(run)
    return out


def _copy(run: Path, tmp: Path) -> Path:
    out = tmp / "run"
    shutil.copytree(run, out, symlinks=True)
    return out


def _foreign(tmp: Path, run: Path) -> Path:
    """A directory that is no ponder run but has folders of the same names."""
    out = tmp / "mine"
    for name in ("checkpoints", "final", "tb"):
        (out / name).mkdir(parents=True)
        (out / name / "precious.txt").write_text(name)
    (out / "metrics.jsonl").write_text("my own measurements\n")
    return out


# name -> (directory builder, extra flags, model: "good" or "typo")
FAILED_STARTS = {
    "no-resume, model typo, foreign directory": (_foreign, ["--no-resume"], "typo"),
    "no-resume, model typo, finished run": (lambda t, r: _copy(r, t), ["--no-resume"], "typo"),
    "no-resume, foreign directory": (_foreign, ["--no-resume"], "good"),
    "allowed change, model typo, finished run": (lambda t, r: _copy(r, t), ["--allow-config-change"], "typo"),
}


@pytest.mark.parametrize("name", list(FAILED_STARTS))
def test_a_start_that_fails_deletes_nothing(name, tmp_path, tiny_hf_dir, finished, one_thread, capsys):
    build, extra, model = FAILED_STARTS[name]
    out = build(tmp_path, finished)
    before = snapshot(out)
    capsys.readouterr()
    model_dir = tmp_path / "no-such-model" if model == "typo" else tiny_hf_dir
    assert main([*rlp_argv(model_dir, out, 2), *extra]) == 2
    one_error_line(capsys.readouterr().err)
    assert snapshot(out) == before


def test_a_failed_first_start_leaves_no_settings_behind(tmp_path, tiny_hf_dir, one_thread, capsys):
    out = tmp_path / "run"
    assert main(rlp_argv(tmp_path / "typo", out, 2)) == 2
    assert not (out / "rlp_job.json").exists()
    assert main(rlp_argv(tiny_hf_dir, out, 2)) == 0  # the corrected command is not "a run with other settings"


def _plant_nan(run: Path, what: str) -> None:
    """NaN in the newest checkpoint's ``what``; its manifest recomputed so only the content check can catch it."""
    from safetensors.torch import save_file

    ckpt = run / "checkpoints" / "step-00000002"
    if what == "learning rate":
        path = ckpt / "trainer_state.json"
        state = json.loads(path.read_text())
        state["optimizer"]["param_groups"][0]["lr"] = float("nan")
        path.write_text(json.dumps(state))
    else:
        name = "trainer_state.safetensors" if what == "adam moment" else "model.safetensors"
        tensors = load_file(str(ckpt / name))
        key = next(k for k, t in tensors.items() if t.is_floating_point() and t.dim() >= 1)
        tensors[key] = torch.full_like(tensors[key], float("nan"))
        save_file(tensors, str(ckpt / name), metadata={"format": "pt"})
    write_manifest(ckpt)


@pytest.mark.parametrize("what", ["learning rate", "adam moment", "weights"])
def test_a_nonfinite_checkpoint_is_refused_and_no_good_one_is_lost(what, tmp_path, tiny_hf_dir, finished, capsys):
    run = _copy(finished, tmp_path)
    _plant_nan(run, what)
    before = snapshot(run / "checkpoints")
    capsys.readouterr()
    assert main(rlp_argv(tiny_hf_dir, run, 4)) == 2
    assert "inf or NaN" in one_error_line(capsys.readouterr().err)
    assert snapshot(run / "checkpoints") == before  # nothing trained on it, nothing pruned


@pytest.mark.parametrize("where", ["learning rate", "adam moment", "weight", "ema weight"])
def test_a_checkpoint_is_checked_finite_before_it_is_written(where, tmp_path, random_tiny, one_thread):
    import copy

    from ponder.train.checkpoint import save_checkpoint
    from ponder.train.guard import NonFiniteWeightsError

    model, tok = random_tiny
    model = copy.deepcopy(model)
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step()
    save_checkpoint(tmp_path, 1, model, tok, {"optimizer": opt.state_dict()}, {"ema": ema}, keep_last=1)
    before = snapshot(tmp_path)
    with torch.no_grad():
        if where == "learning rate":
            opt.param_groups[0]["lr"] = float("nan")
        elif where == "adam moment":
            next(iter(opt.state.values()))["exp_avg"].fill_(float("nan"))
        else:
            next((ema if where == "ema weight" else model).parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match="step-00000001"):
        save_checkpoint(tmp_path, 2, model, tok, {"optimizer": opt.state_dict()}, {"ema": ema}, keep_last=1)
    assert snapshot(tmp_path) == before  # keep_last = 1 pruned nothing: the newest finite checkpoint is there


def _victim(tmp: Path) -> Path:
    victim = tmp / "victim"
    victim.mkdir()
    (victim / "victim.txt").write_text("precious")
    return victim


# where a link is planted -> what it points to ("file": victim.txt, "dir": the victim folder)
PLANTED_LINKS = {
    ".lock": "file",
    ".ponder-write-test{pid}": "file",
    "checkpoints": "dir",
}


@pytest.mark.parametrize("name", list(PLANTED_LINKS))
def test_a_planted_link_is_never_written_through(name, tmp_path, tiny_hf_dir, one_thread, capsys):
    victim = _victim(tmp_path)
    before = snapshot(victim)
    out = tmp_path / "run"
    out.mkdir()
    (out / name.format(pid=os.getpid())).symlink_to(victim / "victim.txt" if PLANTED_LINKS[name] == "file" else victim)
    capsys.readouterr()
    code = main(rlp_argv(tiny_hf_dir, out, 1))
    assert snapshot(victim) == before
    if code != 0:  # refused (a link where ponder writes, or a run's folder in a directory of no run)
        assert code == 2 and one_error_line(capsys.readouterr().err)


def test_a_planted_checkpoint_temporary_folder_link_is_replaced_not_followed(tmp_path, tiny_hf_dir, finished, capsys):
    victim = _victim(tmp_path)
    before = snapshot(victim)
    run = _copy(finished, tmp_path)
    (run / "checkpoints" / f".step-00000003.tmp{os.getpid()}").symlink_to(victim)
    assert main(rlp_argv(tiny_hf_dir, run, 3)) == 0
    assert snapshot(victim) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
@pytest.mark.parametrize("name", ["metrics.jsonl", "run.json"])
def test_a_run_file_of_another_user_is_refused(name, tmp_path, tiny_hf_dir, finished, capsys):
    victim = _victim(tmp_path) / "victim.txt"
    os.chown(victim, 65534, 65534)
    run = _copy(finished, tmp_path)
    (run / name).unlink()
    os.link(victim, run / name)  # a hard link: O_NOFOLLOW alone would write into it
    capsys.readouterr()
    assert main(rlp_argv(tiny_hf_dir, run, 3)) == 2
    assert "another user" in one_error_line(capsys.readouterr().err)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("manifest", ["as written", "recomputed"])
def test_a_file_added_to_a_checkpoint_is_never_loaded(manifest, tmp_path, tiny_hf_dir, finished, reference, capsys):
    from safetensors.torch import save_file

    run = _copy(finished, tmp_path)
    newest = run / "checkpoints" / "step-00000002"
    zeros = {k: torch.zeros_like(v) for k, v in load_file(str(newest / "model.safetensors")).items()}
    save_file(zeros, str(newest / "zz-extra.safetensors"), metadata={"format": "pt"})
    if manifest == "recomputed":
        write_manifest(newest)
    capsys.readouterr()
    assert main(rlp_argv(tiny_hf_dir, run, 3)) == 0
    if manifest == "as written":
        assert "zz-extra.safetensors is not in the manifest" in capsys.readouterr().err
    assert max_abs_diff(reference[3], weights(run)) == 0


def _delete_job_file(run: Path, model2: Path) -> list[str]:
    (run / "rlp_job.json").unlink()
    return ["--lr", "1e-2"]


def _edit_job_model(run: Path, model2: Path) -> list[str]:
    path = run / "rlp_job.json"
    settings = json.loads(path.read_text())
    settings["model"] = str(model2)
    path.write_text(json.dumps(settings))
    return ["--model", str(model2)]


@pytest.mark.parametrize("tamper", [_delete_job_file, _edit_job_model], ids=["deleted", "model edited"])
def test_resume_checks_the_settings_saved_in_the_checkpoint(tamper, tmp_path, tiny_hf_dir, finished, capsys):
    run = _copy(finished, tmp_path)
    model2 = tmp_path / "model2"
    shutil.copytree(tiny_hf_dir, model2)
    extra = tamper(run, model2)
    before = snapshot(run)
    capsys.readouterr()
    assert main([*rlp_argv(tiny_hf_dir, run, 3), *extra]) == 2
    one_error_line(capsys.readouterr().err)
    assert snapshot(run) == before


# trainer state key path -> forged value (the manifest is recomputed: only validation can catch it)
FORGED_STATES = {
    "step 1e300": (("step",), 1e300),
    "step -5": (("step",), -5),
    "docs_consumed 1e18": (("recipe", "docs_consumed"), 10**18),
    "negative counter": (("counters", "skipped_nonfinite"), -1),
}


@pytest.mark.parametrize("name", list(FORGED_STATES))
def test_a_forged_trainer_state_is_refused(name, tmp_path, tiny_hf_dir, finished, capsys):
    keys, value = FORGED_STATES[name]
    run = _copy(finished, tmp_path)
    ckpt = run / "checkpoints" / "step-00000002"
    path = ckpt / "trainer_state.json"
    state = json.loads(path.read_text())
    target = state
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    path.write_text(json.dumps(state))
    write_manifest(ckpt)
    before = snapshot(run / "checkpoints")
    capsys.readouterr()
    assert main(rlp_argv(tiny_hf_dir, run, 4)) == 2
    assert "trainer state" in one_error_line(capsys.readouterr().err)
    assert snapshot(run / "checkpoints") == before


def _rust_enospc(path):
    """What safetensors raises on a full disk (its own error type, quoting the OS error)."""
    from safetensors import SafetensorError

    raise SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )


def _os_error(code: int):
    def fail(path):
        raise OSError(code, os.strerror(code), str(path))

    return fail


# name -> (module attribute replaced at step 3, replacement, expected exit code, words of the message)
OS_ERRORS = {
    "full disk in the weights (safetensors)": ("ponder.train.checkpoint.write_state", _rust_enospc, 75, "free space"),
    "full disk in the manifest": ("ponder.train.checkpoint.write_manifest", _os_error(errno.ENOSPC), 75, "free space"),
    "read-only metrics": ("ponder.train.metrics.MetricsLogger.log", _os_error(errno.EROFS), 2, "read-only"),
    "permission on latest": ("ponder.train.checkpoint.atomic_write_text", _os_error(errno.EACCES), 2, "permission"),
}


def _fail_after_checkpoint(monkeypatch, target: str, replacement, run: Path, step: int) -> None:
    """Replace ``target`` (``module.function`` or ``module.Class.method``) by ``replacement`` once checkpoint
    ``step`` of ``run`` exists; ``replacement`` gets the path being written."""
    import importlib

    module_name, _, attr = target.rpartition(".")
    try:
        owner = importlib.import_module(module_name)
    except ModuleNotFoundError:  # a method: module.Class.method
        module_name, _, cls = module_name.rpartition(".")
        owner = getattr(importlib.import_module(module_name), cls)
    real = getattr(owner, attr)

    def maybe_fail(*args, **kwargs):
        if not (run / "checkpoints" / f"step-{step:08d}").is_dir():
            return real(*args, **kwargs)
        path = args[0].path if hasattr(args[0], "path") else args[0]  # MetricsLogger.log(self, ...): its file
        return replacement(path)

    monkeypatch.setattr(owner, attr, maybe_fail)


@pytest.mark.parametrize("name", list(OS_ERRORS))
def test_an_os_error_mid_run_is_one_line_and_the_run_resumes_exactly(
    name, tmp_path, tiny_hf_dir, reference, one_thread, monkeypatch, capsys
):
    from ponder.train.checkpoint import latest_checkpoint

    target, replacement, code, words = OS_ERRORS[name]
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _fail_after_checkpoint(patch, target, replacement, run, 2)
        capsys.readouterr()
        assert main(rlp_argv(tiny_hf_dir, run, 4)) == code
        line = one_error_line(capsys.readouterr().err)
    assert words in line and str(run) in line and "rerun" in line
    assert latest_checkpoint(run) is not None and leftovers(run) == []  # the last good checkpoint is intact
    assert main(rlp_argv(tiny_hf_dir, run, 4)) == 0  # the cause fixed: the same command resumes ...
    assert max_abs_diff(reference[4], weights(run)) == 0  # ... exactly


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    """A small tmpfs at ``path`` (skips the test where mounting is not allowed)."""
    path.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    ).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_real_full_disk_then_freed_resumes_exactly(tmp_path, tiny_hf_dir, reference, one_thread, capsys):
    with _tmpfs(tmp_path / "disk", "2m") as disk:
        run = disk / "run"
        assert main(rlp_argv(tiny_hf_dir, run, 1)) == 0
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 300_000))  # room for about one more checkpoint
        capsys.readouterr()
        assert main(rlp_argv(tiny_hf_dir, run, 4)) == 75
        line = one_error_line(capsys.readouterr().err)
        assert "No space left on device" in line and "free space" in line
        filler.unlink()
        assert main(rlp_argv(tiny_hf_dir, run, 4)) == 0
        assert max_abs_diff(reference[4], weights(run)) == 0


def test_a_disk_remounted_read_only_mid_run_is_one_line(tmp_path, tiny_hf_dir, reference, one_thread, capsys):
    from ponder.train.metrics import MetricsLogger

    run = tmp_path / "run"
    assert main(rlp_argv(tiny_hf_dir, run, 1)) == 0
    ckpts = run / "checkpoints"  # its own mount: the run's lock file, open for writing, would keep the rest busy
    if subprocess.run(["mount", "--bind", str(ckpts), str(ckpts)], capture_output=True).returncode:
        pytest.skip("bind mounts are not allowed here")
    real_log = MetricsLogger.log

    def remount_at_step_3(self, step, metrics):
        if step == 3:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(ckpts)], check=True)
        return real_log(self, step, metrics)

    try:
        capsys.readouterr()
        MetricsLogger.log = remount_at_step_3
        try:
            assert main(rlp_argv(tiny_hf_dir, run, 4)) == 2
        finally:
            MetricsLogger.log = real_log
        line = one_error_line(capsys.readouterr().err)
        assert "Read-only file system" in line and str(ckpts) in line
        subprocess.run(["mount", "-o", "remount,bind,rw", str(ckpts)], check=True)
        assert main(rlp_argv(tiny_hf_dir, run, 4)) == 0
        assert max_abs_diff(reference[4], weights(run)) == 0
    finally:
        subprocess.run(["umount", "-l", str(ckpts)], check=False)


def test_metrics_are_per_step_with_totals_named_as_such(tmp_path, tiny_hf_dir, one_thread):
    from ponder.train.metrics import read_metrics

    rows = {}
    for job in ("rlp", "grpo", "cpt"):
        every_step = ["--log-every", "1"] if job == "cpt" else []
        assert main([*job_argv(job, tiny_hf_dir, tmp_path / job, steps=3), *every_step]) == 0
        rows[job] = read_metrics(tmp_path / job)
    per_step = {"rlp": ["positions", "thought_tokens"], "grpo": ["completions", "thought_tokens", "groups_trained"],
                "cpt": ["tokens"]}  # fmt: skip
    totals = {"cpt": {"tokens": "tokens_seen_total"}}
    for job, keys in per_step.items():
        for key in keys:
            total = totals.get(job, {}).get(key, f"{key}_total")
            steps = [r[key] for r in rows[job]]
            assert [r[total] for r in rows[job]] == [sum(steps[: i + 1]) for i in range(len(steps))], (job, key)
    assert all(r["completions"] == 4 for r in rows["grpo"])  # 2 prompts x group 2, every step


def test_run_json_records_whether_a_start_resumed_and_from_which_step(tmp_path, tiny_hf_dir, one_thread):
    run = tmp_path / "run"
    assert main(rlp_argv(tiny_hf_dir, run, 2)) == 0  # --resume is the default: a new run still did not resume
    assert main(rlp_argv(tiny_hf_dir, run, 3)) == 0
    assert main(rlp_argv(tiny_hf_dir, run, 3, "--no-resume")) == 0
    starts = json.loads((run / "run.json").read_text())["starts"]
    assert [(s["resumed"], s["resumed_from_step"]) for s in starts] == [(False, None), (True, 2), (False, None)]
