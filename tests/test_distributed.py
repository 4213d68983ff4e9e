"""Data parallelism on CPU (gloo): 2 processes sharing a step's work == 1 process doing all of it.

For RLP, GRPO and TTRL: the same final parameters (to 1e-5), counters summed over ranks, and the
work split visible per rank in the summary.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
WORK = {"rlp": "positions", "grpo": "completions", "ttrl": "completions"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(job: str, tmp_path: Path) -> dict:
    port, out = _free_port(), tmp_path / "ddp.pt"
    src = str(HERE.parent / "src")
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        }
        cmd = [sys.executable, str(HERE / "dist_worker.py"), job, str(tmp_path / "ddp"), str(out)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for p in procs:
        log = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, log
    return torch.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("job", ["rlp", "grpo", "ttrl"])
def test_two_gloo_ranks_reach_the_single_process_parameters(job, tmp_path, one_thread):
    sys.path.insert(0, str(HERE))
    from dist_worker import ARCH, run

    single, single_summary = run(job, str(tmp_path / "single"))
    ddp = _launch(job, tmp_path)
    for name, value in single.items():
        torch.testing.assert_close(ddp["params"][name], value, atol=1e-5, rtol=0, msg=name)
    assert set(ddp["params"]) == set(single)
    # The run trained: parameters left their initialisation (same seed, fresh model).
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

    init = build_tiny_model(build_char_tokenizer(), TinyArch(**ARCH), seed=0).state_dict()
    assert max(float((single[k] - v).abs().max()) for k, v in init.items()) > 1e-4
    # Every counter of the summary is summed over ranks: the 2-rank run counts what 1 process counted.
    summary, work = ddp["summary"], WORK[job]
    assert summary["world_size"] == 2 and single_summary["world_size"] == 1
    per_rank = summary[f"{work}_per_rank"]
    assert len(per_rank) == 2 and all(n > 0 for n in per_rank)
    assert sum(per_rank) == summary[work] == single_summary[work] == single_summary[f"{work}_per_rank"][0]
    for key in ("thought_tokens", "skipped_nonfinite"):
        assert summary[key] == single_summary[key], key
