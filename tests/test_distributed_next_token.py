"""Next-token training under torchrun (2 gloo ranks on CPU) == one process: ``ponder cpt`` and ``ponder base``.

Both run on the engine (:mod:`ponder.train.next_token`): each rank trains on every other window of a step,
and the loss, one term over predicted tokens, is divided by the step's count over both ranks. Five windows a
step (ranks hold 3 and 2, of different token counts) and micro-batches of 2 on the ranks only (they hold
2 and 1 parts): an average of per-rank or per-part means would end elsewhere.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from gloo import free_port, rank_env  # noqa: E402

pytestmark = pytest.mark.slow  # two interpreters per launch, a few seconds each


def _cpt(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["cpt", "--model", str(model_dir), "--task", "add2", "--steps", "3", "--batch-size", "5",
            "--max-length", "24", "--lr", "1e-3", "--warmup-steps", "1", "--log-every", "1", "--out", str(out),
            "--quiet", *extra]  # fmt: skip


def _base(out: Path, *extra: str) -> list[str]:
    return ["base", "--task", "add2", "--arch.hidden-size", "32", "--arch.num-layers", "1", "--arch.num-heads", "2",
            "--arch.intermediate-size", "64", "--arch.max-positions", "64", "--train.steps", "3",
            "--train.batch-size", "5", "--train.max-length", "24", "--train.warmup-steps", "1",
            "--train.log-every", "1", "--eval-n", "1", "--out", str(out), "--quiet", *extra]  # fmt: skip


def _run(argv: list[str], ranks: int) -> None:
    port, procs = free_port(), []
    for rank in range(ranks):
        env = rank_env(rank, ranks, port)
        if ranks == 1:
            env = {k: v for k, v in env.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
        cmd = [sys.executable, "-m", "ponder.cli", *argv]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for p in procs:
        log = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, log


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows]


def _assert_same_run(single: Path, ranks: Path, start: dict | None) -> None:
    a = load_file(str(single / "final" / "model.safetensors"))
    b = load_file(str(ranks / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-5, worst
    if start is not None:  # the run trained: an equality cannot hold by accident
        assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-4
    # The logged loss is the whole step's (summed over ranks), step by step.
    assert _losses(ranks) == pytest.approx(_losses(single), rel=1e-5)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_cpt_on_two_gloo_ranks_ends_at_the_single_process_weights(mode, tiny_hf_dir, tmp_path):
    _run(_cpt(tiny_hf_dir, tmp_path / "single"), ranks=1)
    _run(_cpt(tiny_hf_dir, tmp_path / mode, "--data-parallel", mode, "--micro-batch", "2"), ranks=2)
    _assert_same_run(tmp_path / "single", tmp_path / mode, load_file(str(tiny_hf_dir / "model.safetensors")))
    single = json.loads((tmp_path / "single" / "cpt_summary.json").read_text())
    summary = json.loads((tmp_path / mode / "cpt_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["data_parallel"] == mode
    assert summary["tokens_seen"] == single["tokens_seen"]  # every rank's windows, counted once
    assert summary["windows_per_rank"] == [9, 6] and single["windows_per_rank"] == [15]


def test_base_on_two_gloo_ranks_ends_at_the_single_process_weights(tmp_path):
    _run(_base(tmp_path / "single"), ranks=1)
    _run(_base(tmp_path / "ddp", "--train.micro-batch", "2"), ranks=2)
    _assert_same_run(tmp_path / "single", tmp_path / "ddp", None)
    assert torch.tensor(_losses(tmp_path / "single")).isfinite().all()
