"""Kill -9, damaged checkpoints and planted pickles: every training job ends with the weights of an
uninterrupted run, and nothing in a run directory executes code.

A killed run is the CLI in a forked child process that SIGKILLs itself at a fault point
(``PONDER_FAULT``, see :mod:`ponder.train.checkpoint`): ``before-save:N`` as checkpoint N is about
to be written (the state of step N is lost, as in a kill during step N+1), ``mid-save:N`` inside
the write of checkpoint N. Forking keeps each kill to a fraction of a second (no interpreter start).
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
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
    """A seconds-long run of ``job`` that checkpoints every step."""
    m, n = str(model_dir), str(steps)
    common = ["--out", str(out), "--quiet"]
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
