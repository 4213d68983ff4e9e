"""Data-parallel RLP on CPU (gloo): 2 processes sharing the documents == 1 process with all of them.

Three documents per step: the ranks hold 2 and 1, so an unweighted average of per-rank means would differ.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_reach_the_single_process_parameters(tmp_path, one_thread):
    sys.path.insert(0, str(HERE))
    from rlp_dist_worker import run

    single = run(str(tmp_path / "single"))

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
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "rlp_dist_worker.py"), str(tmp_path / "ddp"), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    for p in procs:
        log = p.communicate(timeout=120)[0].decode()
        assert p.returncode == 0, log
    ddp = torch.load(out)
    moved = 0
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, atol=1e-5, rtol=0, msg=name)
        moved += 1
    assert moved == len(ddp)
    # The run trained: parameters left their initialisation (same seed, fresh model).
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

    init = build_tiny_model(
        build_char_tokenizer(), TinyArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), seed=0
    ).state_dict()
    assert max(float((single[k] - v).abs().max()) for k, v in init.items()) > 1e-4
