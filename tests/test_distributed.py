"""Data parallelism on CPU (gloo): 2 processes sharing a step's work == 1 process doing all of it.

For RLP, GRPO and TTRL, with full replicas (DDP) and sharded (FSDP2): the same final parameters (to
1e-5; RLP's EMA teacher included), counters summed over ranks, and the work split visible per rank
in the summary. A sharded run stopped midway resumes on another number of ranks and ends equal to
the uninterrupted run.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ponder.train.state import STATE_JSON

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from gloo import free_port, rank_env  # noqa: E402

WORK = {"rlp": "positions", "grpo": "completions", "ttrl": "completions"}


def _launch(
    job: str, tmp_path: Path, mode: str = "ddp", run_dir: Path | None = None, ranks: int = 2, fault: str = ""
) -> dict | None:
    """``ranks`` gloo processes of ``dist_worker.py`` (a run directory with a checkpoint is resumed); rank 0's results.

    ``fault``: ``PONDER_FAULT`` for rank 0 (:mod:`ponder.train.checkpoint`): it SIGKILLs itself there, the
    other ranks are killed after it, and None is returned.
    """
    port, out = free_port(), tmp_path / f"{mode}.pt"
    run = str(run_dir or tmp_path / mode)
    procs = []
    for rank in range(ranks):
        env = rank_env(rank, ranks, port)
        if fault and rank == 0:
            env["PONDER_FAULT"] = fault
        cmd = [sys.executable, str(HERE / "dist_worker.py"), job, run, str(out), mode]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    if fault:
        log = procs[0].communicate(timeout=300)[0].decode()
        assert procs[0].returncode == -signal.SIGKILL, log
        for p in procs[1:]:  # waiting for rank 0 at a collective, or failing on its closed connection
            p.kill()
            p.communicate()
        return None
    for p in procs:
        log = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, log
    return torch.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
@pytest.mark.parametrize("job", ["rlp", "grpo", "ttrl"])
def test_two_gloo_ranks_reach_the_single_process_parameters(job, mode, tmp_path, one_thread):
    sys.path.insert(0, str(HERE))
    from dist_worker import ARCH, run

    single, single_summary = run(job, str(tmp_path / "single"))
    ddp = _launch(job, tmp_path, mode)
    _assert_close(ddp["params"], single)
    # The run trained: parameters left their initialisation (same seed, fresh model).
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

    init = build_tiny_model(build_char_tokenizer(), TinyArch(**ARCH), seed=0).state_dict()
    assert max(float((single[k] - v).abs().max()) for k, v in init.items()) > 1e-4
    # Every counter of the summary is summed over ranks: the 2-rank run counts what 1 process counted.
    summary, work = ddp["summary"], WORK[job]
    assert summary["world_size"] == 2 and single_summary["world_size"] == 1
    assert summary["data_parallel"] == mode and single_summary["data_parallel"] == "none"
    per_rank = summary[f"{work}_per_rank"]
    assert len(per_rank) == 2 and all(n > 0 for n in per_rank)
    assert sum(per_rank) == summary[work] == single_summary[work] == single_summary[f"{work}_per_rank"][0]
    for key in ("thought_tokens", "skipped_nonfinite"):
        assert summary[key] == single_summary[key], key
    # The logged step metrics are the step's (ranks' shares weighted by their work), not rank 0's share:
    # equal to the single process's, step by step (docs_per_step 3 splits 2 / 1 over the ranks).
    logged = {name: _metrics(tmp_path / name) for name in ("single", mode)}
    assert len(logged[mode]) == len(logged["single"]) > 0
    for one, two in zip(logged["single"], logged[mode]):
        for key in ("thought_tokens_mean", "reward_mean", "unclosed_fraction"):
            assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-5), key
        if job != "rlp":  # counts of groups: summed over ranks
            assert two["groups_trained"] == one["groups_trained"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_a_sharded_run_killed_midway_resumes_on_another_number_of_ranks(tmp_path, one_thread):
    """2 FSDP ranks killed as checkpoint 2 is written resume on 1 process, and 1 process on 2 FSDP ranks: both
    end with the parameters (EMA teacher included) of the uninterrupted run."""
    sys.path.insert(0, str(HERE))
    from dist_worker import run

    reference, _ = run("rlp", str(tmp_path / "single"))

    two_then_one = tmp_path / "two-then-one"
    _launch("rlp", tmp_path, "fsdp", two_then_one, ranks=2, fault="before-save:2")
    ckpt = two_then_one / "checkpoints" / "step-00000001"
    assert [p.name for p in (two_then_one / "checkpoints").glob("step-*")] == [ckpt.name]
    saved = json.loads((ckpt / STATE_JSON).read_text())
    assert saved["world_size"] == 2 and "model.norm.weight" in saved["optimizer"]["state"]  # full, keyed by name
    # An ordinary HF checkpoint: the single process's tensors, names and shapes (tied weights once).
    single = load_file(str(tmp_path / "single" / "final" / "model.safetensors"))
    sharded = load_file(str(ckpt / "model.safetensors"))
    assert {k: v.shape for k, v in sharded.items()} == {k: v.shape for k, v in single.items()}
    resumed, _ = run("rlp", str(two_then_one), mode="fsdp")  # one process: nothing to shard, the same checkpoint
    _assert_close(resumed, reference)

    one_then_two = tmp_path / "one-then-two"
    _launch("rlp", tmp_path, "fsdp", one_then_two, ranks=1, fault="before-save:2")
    _assert_close(_launch("rlp", tmp_path, "fsdp", one_then_two)["params"], reference)


#: Rows of the tokens no run here reads or samples (<bos>, <eos>, <unk>, <pad>: banned inside a thought). Their
#: gradient is the softmax's tail alone (~1e-9), whose sign is float noise of the summation order, and AdamW moves
#: a weight by about lr * sign(g) whatever |g|: after 3 steps at lr 1e-3 they may differ by up to 2 * 3 * lr between
#: layouts (seen: 2.4e-5 on <eos>). Their gradients are compared to 1e-6 relative by tests/test_loss_grid.py.
NOISE_ROWS_ATOL = 2 * 3 * 1e-3


def _assert_close(got: dict, want: dict) -> None:
    from ponder.lm.delimiters import structure_token_ids, think_token_ids
    from ponder.lm.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    noise_rows = torch.tensor(structure_token_ids(tok, keep=think_token_ids(tok)))
    assert set(got) == set(want)
    for name, value in want.items():
        if value.dim() == 2 and value.shape[0] == len(tok):  # an embedding or output layer: one row per token
            keep = torch.ones(value.shape[0], dtype=torch.bool)
            keep[noise_rows] = False
            torch.testing.assert_close(got[name][keep], value[keep], atol=1e-5, rtol=0, msg=name)
            torch.testing.assert_close(got[name][~keep], value[~keep], atol=NOISE_ROWS_ATOL, rtol=0, msg=name)
        else:
            torch.testing.assert_close(got[name], value, atol=1e-5, rtol=0, msg=name)


def test_step_metrics_over_ranks_by_hand():
    from ponder.train.distributed import mean_over_ranks

    ranks = [
        {"reward_mean": 1.0, "thought_tokens_mean": 4.0, "groups_trained": 2, "info_gain_answer": None, "kind": "a"},
        {"reward_mean": 4.0, "thought_tokens_mean": 1.0, "groups_trained": 1, "info_gain_answer": 0.5, "kind": "b"},
    ]
    # Rank 0 did twice rank 1's work: (2 * 1 + 1 * 4) / 3 = 2 and (2 * 4 + 1 * 1) / 3 = 3.
    got = mean_over_ranks(ranks, [2, 1], summed=("groups_trained",))
    assert got["reward_mean"] == pytest.approx(2.0) and got["thought_tokens_mean"] == pytest.approx(3.0)
    assert got["groups_trained"] == 3  # a count: added up
    assert got["info_gain_answer"] == 0.5  # a rank without the class is left out of the mean
    assert got["kind"] == "a"  # not a number: the first rank's
    # No work anywhere (or no weights): plain means; a key only one rank has is that rank's.
    assert mean_over_ranks(ranks, [0, 0])["reward_mean"] == pytest.approx(2.5)
    assert mean_over_ranks([{"a": 1.0}, {}])["a"] == 1.0
    assert mean_over_ranks([{"x": None}, {"x": None}])["x"] is None
