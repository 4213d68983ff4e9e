"""Every loss term weighted by its share of the step's global count: the grid equality test.

Every cell of the grid (GRPO's reductions x KL, RLP's KL x next-token term x reward-token weight
with k = 1 and k = 4, each in one pass and in micro-batches) computes the same first-step gradient
in one process, in micro-batches, and on 2 gloo ranks (DDP and FSDP2), to 1e-6 relative. Gradients, not
weights after AdamW: Adam's first step turns a float-noise sign flip of a ~0 gradient into a
difference of 2 lr and hides a wrong weighting of a small term.
"""

import re
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from gloo import launch  # noqa: E402
from grid_worker import cell_name, cells, run_grid  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def launch_grid(tmp_path: Path, mode: str, ranks: int = 2) -> dict:
    """The whole grid on ``ranks`` gloo processes of ``grid_worker.py`` (one launch for every cell)."""
    out = tmp_path / f"grid-{mode}.pt"
    launch("grid_worker.py", [str(out), mode], ranks)
    return torch.load(out)


def relative_difference(got: dict, want: dict) -> float:
    """``||got - want|| / ||want||`` over every parameter's gradient together."""
    assert set(got) == set(want)
    diff = sum(float((got[k].double() - want[k].double()).square().sum()) for k in want)
    norm = sum(float(want[k].double().square().sum()) for k in want)
    assert norm > 0, "no gradient: the cell trained nothing"
    return (diff / norm) ** 0.5


def _micro_twin(name: str) -> str | None:
    """The one-pass cell of a micro-batched cell (None for a one-pass cell)."""
    if "micro_batch=None" in name:
        return None
    return re.sub(r"micro_batch=[^,]*", "micro_batch=None", name)


@pytest.fixture(scope="module")
def one_process():
    return run_grid()


def test_the_grid_covers_every_term():
    names = [cell_name(r, s) for r, s in cells()]
    assert len(names) == len(set(names)) == 12 + 2 + 24
    assert {s["loss_reduce"] for r, s in cells() if r == "grpo"} == {"rlp", "token", "constant"}
    assert {(s["reward_token_weight"], s["reward_tokens"]) for r, s in cells() if r == "rlp"} == {
        (0.0, 1),
        (0.5, 1),
        (0.5, 4),
    }


@pytest.mark.numerics
def test_micro_batches_give_the_one_pass_gradient(one_process):
    worst = {}
    for name, grads in one_process.items():
        twin = _micro_twin(name)
        if twin is not None:
            worst[name] = relative_difference(grads, one_process[twin])
    assert len(worst) == 19
    assert max(worst.values()) < 1e-6, {k: v for k, v in worst.items() if v >= 1e-6}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_gloo_ranks_give_the_one_process_gradient_in_every_cell(one_process, tmp_path, mode):
    two = launch_grid(tmp_path, mode)
    worst = {name: relative_difference(two[name], grads) for name, grads in one_process.items()}
    assert max(worst.values()) < 1e-6, {k: v for k, v in worst.items() if v >= 1e-6}
