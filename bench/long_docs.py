"""Peak memory of one RLP step and one CPT step on a short corpus and on a 10 MB single-line corpus.

Each run is ``python -m ponder.cli <job> ... --steps 1`` in a fresh process, its peak resident memory
read from ``wait4`` (``ru_maxrss``); a watchdog kills a run that passes ``--cap-mib`` or
``--timeout`` and reports it as such. ``--src`` runs the same commands against other source trees
side by side (e.g. the code before windowed documents), so the ratio is measured in one run::

    OMP_NUM_THREADS=1 python bench/long_docs.py --src /path/to/old/src --src src

The model is a small random tiny model (the step's own memory is the point, not the model's).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

UNIT = "12+34=46 and 7+8=15; "


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(cmd: list[str], env: dict, cap_mib: float, timeout: float) -> tuple[float, float, str]:
    """(peak MiB, seconds, outcome) of one command."""
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed: list[str] = []

    def watch():
        while proc.poll() is None:
            if rss_mib(proc.pid) > cap_mib:
                killed.append(f"killed at the {cap_mib:.0f} MiB cap")
            elif time.time() - start > timeout:
                killed.append(f"killed at the {timeout:.0f} s timeout")
            if killed:
                proc.kill()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    seconds = time.time() - start
    outcome = killed[0] if killed else ("ok" if proc.returncode == 0 else f"exit {proc.returncode}")
    return usage.ru_maxrss / 1024, seconds, outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", help="source tree(s) to run (default: this repository's src)")
    ap.add_argument("--mb", type=float, default=10.0, help="size of the long corpus in MB")
    ap.add_argument("--cap-mib", type=float, default=4096, help="kill a run above this resident memory")
    ap.add_argument("--timeout", type=float, default=300, help="kill a run after this many seconds")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    sources = [str(Path(s).resolve()) for s in (args.src or [str(root / "src")])]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "PYTHONPATH": sources[0], "OMP_NUM_THREADS": "1"}
        model = tmp / "model"
        script = (
            "import sys\nfrom ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model\n"
            "tok = build_char_tokenizer()\n"
            "arch = TinyArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=128)\n"
            "m = build_tiny_model(tok, arch)\nm.save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])\n"
        )
        subprocess.run([sys.executable, "-c", script, str(model)], env=env, check=True)
        corpora = {"short (2 KB)": tmp / "short.txt", f"long ({args.mb:g} MB)": tmp / "long.txt"}
        for path, size in zip(corpora.values(), (2_000, int(args.mb * 1_000_000))):
            path.write_text(UNIT * (size // len(UNIT)))  # one line: a single document
        jobs = {
            "rlp": ["--docs-per-step", "2", "--group-size", "2", "--max-thought-tokens", "4", "--context-length", "64"],
            "cpt": ["--batch-size", "2", "--max-length", "64"],
        }
        print("| source | job | corpus | peak RSS (MiB) | seconds | outcome |\n| --- | --- | --- | --- | --- | --- |")
        peaks, capped = {}, set()
        for src in sources:
            env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
            for job, flags in jobs.items():
                for name, corpus in corpora.items():
                    out = tmp / f"run-{len(peaks)}"
                    cmd = [sys.executable, "-m", "ponder.cli", job, "--model", str(model), "--corpus", str(corpus),
                           "--steps", "1", *flags, "--out", str(out), "--quiet"]  # fmt: skip
                    peak, seconds, outcome = run(cmd, env, args.cap_mib, args.timeout)
                    peaks[(src, job, name)] = peak
                    if outcome.startswith("killed"):
                        capped.add((src, job))
                    print(f"| {src} | {job} | {name} | {peak:.0f} | {seconds:.1f} | {outcome} |", flush=True)
        for src in sources:
            for job in jobs:
                short, long = (peaks[(src, job, name)] for name in corpora)
                bound = "at least " if (src, job) in capped else ""  # killed at the cap: the true peak is higher
                print(f"{src} {job}: long - short = {bound}{long - short:+.0f} MiB ({bound}x{long / short:.2f})")


if __name__ == "__main__":
    main()
