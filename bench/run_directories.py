"""The cases of issue 30 (run directories a typo cannot destroy and a stranger cannot forge), run against
one or more source trees side by side: for each case, what ``ponder`` did (exit code, lines on stderr,
and the case's own outcome: files kept or deleted, a victim file intact or overwritten, weights equal...).

Each case runs ``python -m ponder.cli ...`` in a fresh process (a few through ``python -c`` that patches
one call first) on a 2-step RLP run of a small random tiny model, made by the same source tree::

    OMP_NUM_THREADS=1 python bench/run_directories.py --src /path/to/old/src --src src

The full-disk and read-only cases mount a tmpfs or a bind mount and are reported as skipped where that
is not allowed. A case that runs past ``--timeout`` seconds is killed and reported as a hang.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RLP = ["--task", "add2", "--docs-per-step", "2", "--group-size", "2", "--max-thought-tokens", "4",
       "--context-length", "32", "--lr", "1e-3", "--save-every", "1", "--quiet"]  # fmt: skip
GRPO = ["--task", "add2", "--reward", "self_certainty", "--prompts-per-step", "2", "--group-size", "2",
        "--pool-size", "4", "--max-thought-tokens", "4", "--max-answer-tokens", "3", "--eval-n", "0",
        "--lr", "1e-3", "--quiet"]  # fmt: skip


class Runner:
    """Runs ponder from one source tree; remembers the model and the finished run it made."""

    def __init__(self, src: str, work: Path, timeout: float):
        self.src, self.work, self.timeout = str(Path(src).resolve()), work, timeout
        self.env = {**os.environ, "PYTHONPATH": self.src, "OMP_NUM_THREADS": "1"}

    def python(self, code: str) -> tuple[int | None, str]:
        """``(exit code or None when killed, stderr)``; the stdout is kept in ``self.stdout``."""
        self.stdout = ""
        try:
            p = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
                               timeout=self.timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return None, ""
        self.stdout = p.stdout
        return p.returncode, p.stderr

    def cli(self, *argv: str, patch: str = "") -> tuple[int | None, str]:
        return self.python(f"import sys\n{patch}\nfrom ponder.cli import main\nsys.exit(main({list(argv)!r}))")

    def rlp(self, out: Path, steps: int, *extra: str, model: Path | None = None, patch: str = ""):
        return self.cli("rlp", "--model", str(model or self.model), "--out", str(out), "--steps", str(steps),
                        *RLP, *extra, patch=patch)  # fmt: skip

    def setup(self) -> None:
        self.model = self.work / "model"
        code, out = self.python(
            "from ponder.lm.tiny import TinyArch, build_tiny_model, build_char_tokenizer\n"
            "t = build_char_tokenizer()\n"
            "a = TinyArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=128)\n"
            f"build_tiny_model(t, a, seed=0).save_pretrained({str(self.model)!r}); t.save_pretrained({str(self.model)!r})"
        )
        assert code == 0, out
        self.finished = self.work / "finished"
        code, out = self.rlp(self.finished, 2)
        assert code == 0, out
        self.reference3 = self.work / "reference3"
        assert self.rlp(self.reference3, 3)[0] == 0

    def copy(self, name: str) -> Path:
        out = self.work / name
        shutil.copytree(self.finished, out, symlinks=True)
        return out


def said(code: int | None, text: str) -> str:
    """``exit 2, 1 line`` (lines on stderr) / ``traceback (ValueError)`` / ``hang``."""
    if code is None:
        return "hang (killed)"
    lines = [line for line in text.splitlines() if line.strip()]
    if "Traceback" in text:
        last = next((line for line in reversed(lines) if ":" in line and not line.startswith(" ")), "?")
        return f"exit {code}, traceback ({last.split(':')[0].strip()})"
    return f"exit {code}, {len(lines)} line{'s' * (len(lines) != 1)}"


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != ".lock"}  # fmt: skip


def max_diff(a: Path, b: Path) -> str:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    return f"{max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa):.3g}"


# ---------------------------------------------------------------------------- the cases
def case_no_resume_foreign(r: Runner) -> str:
    out = r.work / "mine"
    for name in ("checkpoints", "final", "tb"):
        (out / name).mkdir(parents=True)
        (out / name / "precious.txt").write_text(name)
    (out / "metrics.jsonl").write_text("mine\n")
    code, text = r.rlp(out, 2, "--no-resume", model=r.work / "nonexistent")
    kept = sum((out / n).exists() for n in ("checkpoints/precious.txt", "final/precious.txt", "tb/precious.txt",
                                            "metrics.jsonl"))  # fmt: skip
    return f"{said(code, text)}; {kept} of 4 files kept"


def case_no_resume_finished(r: Runner) -> str:
    run = r.copy("typo-finished")
    before = files(run)
    code, text = r.rlp(run, 2, "--no-resume", model=r.work / "nonexistent")
    after = files(run)
    return f"{said(code, text)}; {sum(after.get(k) == v for k, v in before.items())} of {len(before)} files kept"


def case_failed_first_start(r: Runner) -> str:
    out = r.work / "fresh"
    r.rlp(out, 2, model=r.work / "nonexistent")
    code, text = r.rlp(out, 2)
    return f"corrected command: {said(code, text)}" + ("; refused: other settings" if "other settings" in text else "")


def _plant_nan(run: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    ckpt = run / "checkpoints" / "step-00000002"
    tensors = load_file(str(ckpt / "trainer_state.safetensors"))
    key = next(k for k, t in tensors.items() if t.is_floating_point() and t.dim() >= 1)
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(ckpt / "trainer_state.safetensors"), metadata={"format": "pt"})
    _remanifest(ckpt)


def _remanifest(ckpt: Path) -> None:
    import hashlib

    entries = {p.relative_to(ckpt).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != "manifest.json"}  # fmt: skip
    (ckpt / "manifest.json").write_text(json.dumps({"sha256": entries}, indent=1))


def case_nan_adam_moment(r: Runner) -> str:
    run = r.copy("nan")
    _plant_nan(run)
    before = files(run / "checkpoints")
    code, text = r.rlp(run, 4)
    names = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    same = files(run / "checkpoints") == before
    return f"{said(code, text)}; checkpoints {', '.join(n[-1] for n in names)} {'unchanged' if same else 'replaced'}"


def case_lock_link(r: Runner) -> str:
    victim = r.work / "victim.txt"
    victim.write_text("precious")
    out = r.work / "lock-link"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    code, text = r.rlp(out, 1)
    return f"{said(code, text)}; victim {'intact' if victim.read_text() == 'precious' else 'overwritten'}"


def case_extra_safetensors(r: Runner) -> str:
    import torch
    from safetensors.torch import load_file, save_file

    run = r.copy("extra")
    newest = run / "checkpoints" / "step-00000002"
    zeros = {k: torch.zeros_like(v) for k, v in load_file(str(newest / "model.safetensors")).items()}
    save_file(zeros, str(newest / "zz-extra.safetensors"), metadata={"format": "pt"})
    code, text = r.rlp(run, 3)
    return f"{said(code, text)}; final weights vs uninterrupted: max diff {max_diff(run, r.reference3)}"


def case_job_file_deleted(r: Runner) -> str:
    run = r.copy("deleted")
    (run / "rlp_job.json").unlink()
    code, text = r.rlp(run, 3, "--lr", "1e-2")
    return said(code, text) + ("; resumed with lr 1e-2" if code == 0 else "")


def case_job_file_model_edited(r: Runner) -> str:
    run = r.copy("edited")
    model2 = r.work / "model2"
    shutil.copytree(r.model, model2, dirs_exist_ok=True)
    settings = json.loads((run / "rlp_job.json").read_text())
    settings["model"] = str(model2)
    (run / "rlp_job.json").write_text(json.dumps(settings))
    code, text = r.rlp(run, 3, model=model2)
    return said(code, text) + ("; resumed the old model's checkpoint" if code == 0 else "")


def _forge(r: Runner, name: str, keys: tuple, value) -> str:
    run = r.copy(name)
    ckpt = run / "checkpoints" / "step-00000002"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    target = state
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    _remanifest(ckpt)
    code, text = r.rlp(run, 30)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()[-1:]]
    return f"{said(code, text)}; last step logged {steps[0] if steps else '-'} of 30"


def case_step_huge(r: Runner) -> str:
    return _forge(r, "step-huge", ("step",), 1e300)


def case_step_negative(r: Runner) -> str:
    return _forge(r, "step-neg", ("step",), -5)


def case_docs_consumed(r: Runner) -> str:
    return _forge(r, "docs", ("recipe", "docs_consumed"), 10**18)


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _fixed_then_rerun(r: Runner, run: Path, first: str, what: str, fix) -> str:
    """``first``, then the same command's outcome after ``fix()`` and its final weights against an uninterrupted run."""
    fix()
    code, _ = r.rlp(run, 3)
    return f"{first}; after {what}: exit {code}, max diff {max_diff(run, r.reference3)}"


def case_full_disk(r: Runner) -> str:
    disk = r.work / "disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)):
        return "skipped (no mount)"
    try:
        run = disk / "run"
        r.rlp(run, 1)
        st = os.statvfs(disk)
        (disk / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 300_000))
        code, text = r.rlp(run, 3)
        return _fixed_then_rerun(r, run, said(code, text), "freeing space", (disk / "filler").unlink)
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def case_read_only(r: Runner) -> str:
    run = r.work / "ro-run"
    r.rlp(run, 1)
    target = run / "checkpoints"  # its own mount: the run's lock file, open for writing, keeps the rest busy
    if not _mount("--bind", str(target), str(target)):
        return "skipped (no mount)"
    patch = (
        "import subprocess\nfrom ponder.train.metrics import MetricsLogger\n_real = MetricsLogger.log\n"
        "def _log(self, step, m):\n"
        f"    if step == 2: subprocess.run(['mount', '-o', 'remount,bind,ro', {str(target)!r}], check=True)\n"
        "    return _real(self, step, m)\nMetricsLogger.log = _log"
    )
    try:
        code, text = r.rlp(run, 3, patch=patch)
        return _fixed_then_rerun(
            r, run, said(code, text), "remounting rw", lambda: _mount("-o", "remount,bind,rw", str(target))
        )
    finally:
        subprocess.run(["umount", "-l", str(target)])


def case_junk_gguf(r: Runner) -> str:
    junk = r.work / "junk.gguf"
    junk.write_bytes(b"not a gguf")
    return said(*r.cli("eval", "--model", str(junk), "--n", "1", "--quiet"))


def case_yaml_not_utf8(r: Runner) -> str:
    path = r.work / "bad.yaml"
    path.write_bytes(b"lr: 0.001\nseed: \xff\n")
    return said(*r.rlp(r.work / "o-yaml", 1, "--config", str(path)))


def case_seed_huge(r: Runner) -> str:
    return said(*r.rlp(r.work / "o-seed", 1, "--seed", "99999999999999999999"))


def case_yaml_twice(r: Runner) -> str:
    path = r.work / "twice.yaml"
    path.write_text("lr: 0.001\nlr: 0.1\n")
    code, text = r.rlp(r.work / "o-twice", 1, "--config", str(path))
    return said(code, text) + ("; names 'lr'" if "'lr'" in text else "")


def case_wrong_vocabulary(r: Runner) -> str:
    model = r.work / "wrong-vocab"
    shutil.copytree(r.model, model, dirs_exist_ok=True)
    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] += 400
    (model / "config.json").write_text(json.dumps(config))
    return said(*r.cli("eval", "--model", str(model), "--n", "1", "--quiet"))


def case_dangling_out(r: Runner) -> str:
    link = r.work / "out-link"
    link.symlink_to(r.work / "missing" / "run")
    code, text = r.rlp(link, 1)
    return said(code, text) + ("; says 'File exists'" if "File exists" in text else "")


def case_token_warning(r: Runner) -> str:
    model = r.work / "short-context"
    shutil.copytree(r.model, model, dirs_exist_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["model_max_length"] = 64
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    corpus = r.work / "corpus.txt"
    corpus.write_text("12+34=46 " * 40)
    code, text = r.rlp(r.work / "o-corpus", 1, "--corpus", str(corpus), model=model)
    return f"exit {code}; warning {'printed' if 'Token indices sequence length' in text else 'not printed'}"


def case_run_json_resumed(r: Runner) -> str:
    starts = json.loads((r.finished / "run.json").read_text())["starts"]
    return f"first start of a new run records resumed = {starts[0]['resumed']}"


def case_groups_trained(r: Runner) -> str:
    out = r.work / "grpo"
    code, text = r.cli("grpo", "--model", str(r.model), "--out", str(out), "--steps", "3", *GRPO)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    total = [row.get("groups_trained_total", "-") for row in rows]
    return f"groups_trained per row {[row['groups_trained'] for row in rows]}, groups_trained_total {total}"


def case_help_default(r: Runner) -> str:
    import re

    r.cli("grpo", "--help")
    entries = re.split(r"\n(?=  -)", r.stdout)  # one entry per flag
    return f"{sum(e.count('(default:') > 1 for e in entries)} flag(s) with two defaults"


CASES = [
    ("1", "--no-resume, model typo, directory that is no run", case_no_resume_foreign),
    ("1", "--no-resume, model typo, finished run", case_no_resume_finished),
    ("2", "model typo on a fresh --out, then the corrected command", case_failed_first_start),
    ("3", "NaN Adam moment in the newest checkpoint, resume to 4 steps", case_nan_adam_moment),
    ("4", "--out/.lock a link to a victim file", case_lock_link),
    ("5", "zz-extra.safetensors of zeros in the newest checkpoint", case_extra_safetensors),
    ("6", "rlp_job.json deleted, resume with --lr 1e-2", case_job_file_deleted),
    ("6", "rlp_job.json's model edited, resume with that model", case_job_file_model_edited),
    ("7", "trainer state step 1e300 (manifest recomputed), --steps 30", case_step_huge),
    ("7", "trainer state step -5, --steps 30", case_step_negative),
    ("7", "trainer state docs_consumed 1e18, --steps 30", case_docs_consumed),
    ("8", "--out on a full 2 MB tmpfs, then space freed", case_full_disk),
    ("8", "checkpoints/ remounted read-only mid-run, then rw", case_read_only),
    ("9", "--model junk.gguf", case_junk_gguf),
    ("9", "--config YAML with byte 0xff", case_yaml_not_utf8),
    ("9", "--seed 99999999999999999999", case_seed_huge),
    ("s", "--config YAML with a key twice", case_yaml_twice),
    ("s", "wrong-vocabulary model (eval)", case_wrong_vocabulary),
    ("s", "dangling --out link", case_dangling_out),
    ("s", "corpus with a document longer than the tokenizer's maximum", case_token_warning),
    ("s", "run.json of a brand-new run", case_run_json_resumed),
    ("s", "GRPO metrics.jsonl, 3 steps", case_groups_trained),
    ("s", "ponder grpo --help", case_help_default),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", required=True, help="a source tree (repeat to compare)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case is killed as a hang")
    parser.add_argument("--only", help="run the cases whose name contains this text")
    args = parser.parse_args()
    results: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, src in enumerate(args.src):
            runner = Runner(src, Path(tmp) / f"src{i}", args.timeout)
            runner.work.mkdir()
            runner.setup()
            for number, name, case in CASES:
                if args.only and args.only not in name:
                    continue
                try:
                    outcome = case(runner)
                except Exception as e:  # noqa: BLE001 - a case that cannot even be checked is reported, not fatal
                    outcome = f"check failed: {type(e).__name__}: {e}"[:120]
                results.setdefault(f"{number} | {name}", []).append(outcome)
                print(f"[{src}] {number} {name}: {outcome}", file=sys.stderr, flush=True)
    print("| # | case | " + " | ".join(args.src) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in args.src) + " |")
    for key, outcomes in results.items():
        print(f"| {key} | " + " | ".join(outcomes) + " |")


if __name__ == "__main__":
    main()
