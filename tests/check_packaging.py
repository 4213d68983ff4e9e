"""The package as users install it: a wheel built from the tree installs the `ponder` command with its extras,
and `ponder --version` prints the version. Run by CI (`.ci/run`) rather than `make test`: it builds and
installs a wheel and starts the command (tens of seconds), so it is kept out of the default collection
(not named test_*.py); run it with `pytest tests/check_packaging.py`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ponder import __version__

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_the_ponder_command(tmp_path):
    """`pip install .` path: a wheel built from the tree holds the package and the `ponder` entry point,
    declares the extras, and its installed `ponder --version` prints the version."""
    wheels = tmp_path / "wheels"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(wheels),
        str(ROOT),
    ]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("ponder-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ponder/cli.py" in names and "ponder/lm/thinking.py" in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(meta).decode()
    for extra in ("gguf", "tasks", "trl", "peft", "vllm", "wandb", "parquet", "docs", "dev"):
        assert f"Provides-Extra: {extra}" in metadata
    entry = zipfile.ZipFile(wheel).read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert "ponder = ponder.cli:main" in entry

    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    out = subprocess.run(
        [sys.executable, str(target / "bin" / "ponder"), "--version"],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and out.stdout.strip() == f"ponder {__version__}", out.stderr[-2000:]
