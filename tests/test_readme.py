"""Every command in README.md runs: the ponder commands here in a reduced form (one step, a small random-init
model), the Python snippet as written, the Makefile targets by CI (`.ci/run`: make test, make docs), and the
install path (`pip install .`, `ponder --version`) by CI through tests/check_packaging.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ponder.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Flags appended to a README command (argparse keeps the last value): the same job, seconds long.
REDUCED = {
    "base": "--arch.hidden-size 32 --arch.num-layers 1 --arch.num-heads 2 --arch.intermediate-size 64 "
    "--arch.max-positions 64 --train.steps 1 --train.batch-size 2 --train.max-length 32 --train.warmup-steps 1 "
    "--eval-n 1",
    "rlp": "--steps 1 --docs-per-step 1 --positions-per-doc 2 --group-size 2 --max-thought-tokens 4 --context-length 32",
    "eval": "--n 2 --max-thought-tokens 4",
    "corpus build": "--sources python-reference",
    # a random-init model solves nothing: without the filters its one step still trains (and writes final/)
    "grpo": "--steps 1 --group-size 2 --prompts-per-step 1 --pool-size 4 --max-thought-tokens 4 "
    "--max-answer-tokens 3 --eval-n 0 --no-filter-hard --no-filter-equal",
    "audit": "--n 2 --samples 2 --diagnostics dtr,think_at_n --max-thought-tokens 8 --prefix-tokens 4",
}
MODEL_NAMES = ("path/to/hf-model", "tiny-lazy", "tiny")


def readme_commands() -> list[str]:
    """The command lines of the README's bash blocks, comments dropped, continuations joined."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README, flags=re.S | re.M)
    lines = [line.split("  #")[0].strip() for b in blocks for line in b.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_commands_run(tiny_hf_dir, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # runs/ and data/ of the README land here
    ran, covered_elsewhere = [], []
    for line in readme_commands():
        argv = shlex.split(line)
        if argv[0] == "make":  # CI runs make test and make docs; make demo is `ponder demo` (tests/test_demo.py)
            assert re.search(rf"^{argv[1]}:", (ROOT / "Makefile").read_text(), flags=re.M), line
            covered_elsewhere.append(line)
            continue
        if argv[:2] in (["pip", "install"], ["ponder", "--version"]):  # CI: tests/check_packaging.py
            covered_elsewhere.append(line)
            continue
        if argv[0] == "torchrun":  # the same job in one process; examples/torchrun_rlp.sh runs two (test_examples)
            argv = argv[argv.index("ponder.cli") - 1 :]
            argv[0:2] = ["ponder"]
        assert argv[0] == "ponder", f"README command without a test: {line}"
        command = "corpus build" if argv[1] == "corpus" else argv[1]
        args = [str(tiny_hf_dir) if a in MODEL_NAMES else a for a in argv[1:]]
        args = [str(ROOT / a) if a.startswith("examples/") else a for a in args]  # the repository's examples
        if command in ("rlp", "grpo", "audit", "eval") and "--model" not in args:  # a config file names the model
            args += ["--model", str(tiny_hf_dir)]
        assert (
            main(
                [*args, *REDUCED[command].split(), "--quiet"]
                if command != "corpus build"
                else [*args, *REDUCED[command].split()]
            )
            == 0
        ), line
        ran.append(command)
    assert {"base", "rlp", "eval", "corpus build", "grpo", "audit"} <= set(ran)
    assert Path("runs/audit/report.html").is_file() and Path("data/realtext/train.jsonl").is_file()
    assert any(c.startswith("make demo") for c in covered_elsewhere)


def test_readme_python_snippet_runs(tiny_hf_dir, one_thread):
    (snippet,) = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)
    assert 'load_model("tiny")' in snippet and "n=100" in snippet
    code = snippet.replace('"tiny"', repr(str(tiny_hf_dir))).replace("n=100", "n=2")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    assert scope["samples"].tokens.shape[0] == 4  # n=4 samples of the one prompt
