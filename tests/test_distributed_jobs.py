"""``ponder refine`` and ``ponder early-experience`` under torchrun (2 gloo ranks on CPU) == one process.

Both train on the one engine; refinement also splits the teacher's sampling across the ranks in whole
decode batches (batch ``b`` on rank ``b % 2``), and early experience collects its experience on every
rank. The run directory is rank 0's; the trained weights end within 1e-5 of one process.
"""

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from test_distributed_next_token import _run  # noqa: E402

pytestmark = pytest.mark.slow  # two interpreters per launch, a few seconds each


def _max_diff(a: Path, b: Path, start: Path | None = None) -> tuple[float, float]:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    moved = 0.0
    if start is not None:
        s = load_file(str(start / "model.safetensors"))
        moved = max(float((x[k] - s[k]).abs().max()) for k in x if k in s and s[k].shape == x[k].shape)
    return max(float((x[k] - y[k]).abs().max()) for k in x), moved


def test_refine_on_two_gloo_ranks_writes_the_single_process_table_and_student(tiny_hf_dir, tmp_path):
    def argv(out: Path) -> list[str]:
        return ["refine", "--task", "add2", "--teacher", str(tiny_hf_dir), "--student", str(tiny_hf_dir),
                "--n-train", "7", "--teacher-batch-size", "2", "--teacher-temperature", "1.0", "--eval-n", "2",
                "--filter.rule", "all", "--train.steps", "3", "--train.batch-size", "5", "--train.lr", "1e-3",
                "--train.warmup-steps", "1", "--train.save-every", "3", "--train.max-length", "64",
                "--train.micro-batch", "2", "--out", str(out), "--quiet"]  # fmt: skip

    _run(argv(tmp_path / "single"), ranks=1)
    _run(argv(tmp_path / "ddp"), ranks=2)
    one = json.loads((tmp_path / "single" / "refinement_table.json").read_text())
    two = json.loads((tmp_path / "ddp" / "refinement_table.json").read_text())
    # Rank 1 sampled batches 1 and 3 (prompts 2-3 and 6) at T = 1: the same ids as the one process drew.
    assert two["refined_ids"] == one["refined_ids"] and len(one["refined_ids"]) == 7
    assert two["loss_refined"] == pytest.approx(one["loss_refined"], rel=1e-6)
    diff, moved = _max_diff(
        tmp_path / "single" / "student" / "final", tmp_path / "ddp" / "student" / "final", tiny_hf_dir
    )
    assert diff <= 1e-5 and moved > 1e-4, (diff, moved)
    summary = json.loads((tmp_path / "ddp" / "refine_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["kept"] == 7


def test_early_experience_on_two_gloo_ranks_trains_the_single_process_models(tiny_hf_dir, tmp_path):
    def argv(out: Path) -> list[str]:
        return ["early-experience", "--model", str(tiny_hf_dir), "--task", "add2", "--experts", "5",
                "--samples-per-state", "1", "--recipes", "imitation", "--seeds", "0", "--train.steps", "2",
                "--train.batch-size", "5", "--train.lr", "1e-3", "--train.warmup-steps", "1",
                "--train.max-length", "64", "--grpo-steps", "0", "--eval-n", "2", "--world-model-probe", "0",
                "--out", str(out), "--quiet"]  # fmt: skip

    _run(argv(tmp_path / "single"), ranks=1)
    _run(argv(tmp_path / "ddp"), ranks=2)
    run = Path("seed0") / "imitation" / "final"
    diff, moved = _max_diff(tmp_path / "single" / run, tmp_path / "ddp" / run, tiny_hf_dir)
    assert diff <= 1e-5 and moved > 1e-4, (diff, moved)
    one = json.loads((tmp_path / "single" / "early_experience.json").read_text())
    two = json.loads((tmp_path / "ddp" / "early_experience.json").read_text())
    assert two["runs"][0]["target_tokens"] == one["runs"][0]["target_tokens"]
    assert two["runs"][0]["accuracy"] == one["runs"][0]["accuracy"]
