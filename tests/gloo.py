"""Launch a script on several gloo ranks of one machine (the environment torchrun would export)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, ranks: int, port: int) -> dict:
    """This process's environment plus what torchrun exports for ``rank`` of ``ranks``, with this checkout's src."""
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(ranks),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    }


def launch(script: str, args: list[str], ranks: int = 2, timeout: float = 600) -> list[str]:
    """Run ``tests/<script> args`` on ``ranks`` gloo processes; every rank must exit 0 within ``timeout`` seconds
    (else all are killed and the test fails). Returns each rank's output."""
    port = free_port()
    procs = []
    for rank in range(ranks):
        cmd = [sys.executable, str(HERE / script), *args]
        procs.append(
            subprocess.Popen(cmd, env=rank_env(rank, ranks, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0].decode())
            assert p.returncode == 0, logs[-1]
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{script} did not finish within {timeout} s on {ranks} ranks (a deadlock?)") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return logs
