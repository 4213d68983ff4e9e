"""End to end: ``ponder audit`` on a seconds-trained tiny model against a one-step RLP checkpoint,
the report rendered by headless Chromium, and the bad-input paths."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

import pytest

from ponder.jobs.audit import DIAGNOSTICS, AuditJob, run_audit
from ponder.report.audit_report import HEADINGS


@pytest.fixture(scope="module")
def rlp_dir(trained_tiny_dir, tmp_path_factory):
    from ponder.jobs.rlp import RLPJob, run_rlp

    out = tmp_path_factory.mktemp("rlp")
    run_rlp(
        RLPJob(
            model=str(trained_tiny_dir),
            task="add2",
            steps=1,
            docs_per_step=2,
            group_size=2,
            max_thought_tokens=8,
            out=str(out),
        ),
        resume=False,
        progress=False,
    )
    return out / "final"


@pytest.fixture(scope="module")
def audit_run(trained_tiny_dir, rlp_dir, tmp_path_factory):
    from ponder.cli import main

    out = tmp_path_factory.mktemp("audit")
    rc = main(
        [
            "audit",
            "--model",
            str(trained_tiny_dir),
            "--compare",
            str(rlp_dir),
            "--task",
            "add2",
            "--n",
            "3",
            "--samples",
            "2",
            "--budgets",
            "4,16",
            "--prefix-tokens",
            "4",
            "--exemplars",
            "1",
            "--out",
            str(out),
            "--json",
            str(out / "cli.json"),
            "--quiet",
        ]
    )
    assert rc == 0
    return out


@pytest.mark.slow
def test_audit_writes_every_diagnostic(audit_run):
    data = json.loads((audit_run / "cli.json").read_text())
    assert data == json.loads((audit_run / "audit.json").read_text())
    for key in DIAGNOSTICS:
        assert key in data and "skipped" not in data[key], key
    assert data["dtr"]["num_layers"] == 2 and data["dtr"]["log_base"] == 2.0
    assert len(data["dtr"]["per_response"]) == 3 * 2
    tn = data["think_at_n"]
    assert tn["n"] == 2 and tn["think_at_n_tokens"] <= tn["self_consistency_tokens"]
    assert set(data["step_information_gain"]["models"]) == {data["model"], data["compare"]}
    assert 0.0 <= data["sparsity"]["sparsity_bf16"] <= 1.0 and data["sparsity"]["parameters"] > 0
    assert data["budget_curve"]["budgets"] == [4, 16]
    assert set(data["validity"]["accuracy"]) == {"valid", "invalid", "answer_only"}
    assert len(data["planning_tokens"]["checkpoints"]) == 2
    assert data["reflection"]["traces"] == 6
    html = (audit_run / "report.html").read_text()
    for heading in HEADINGS.values():
        assert f"<h2>{heading}</h2>" in html.replace("&amp;", "&")
    assert "log base 2" in html


def test_models_without_lens_access_are_skipped_with_the_reason(trained_tiny_dir, tmp_path, monkeypatch, one_thread):
    import sys

    import ponder.lm.lens as lens

    dtr = sys.modules["ponder.audit.dtr"]  # the module (the package re-exports a function of that name)

    def no_lens(model):
        raise lens.LensUnsupported("no final norm here")

    monkeypatch.setattr(dtr, "lens_parts", no_lens)
    data = run_audit(
        AuditJob(
            model=str(trained_tiny_dir),
            task="add2",
            n=2,
            samples=2,
            diagnostics=["dtr", "think_at_n", "reflection", "sparsity"],
            out=str(tmp_path),
        ),
        progress=False,
    )
    for key in ("dtr", "think_at_n"):
        assert "hidden-state access" in data[key]["skipped"] and "no final norm here" in data[key]["skipped"]
    assert "skipped" not in data["reflection"]
    assert "--compare" in data["sparsity"]["skipped"]
    assert data["validity"] == {"skipped": "not requested (--diagnostics)"}
    assert "Skipped: the model gives no hidden-state access" in (tmp_path / "report.html").read_text()


def test_sparsity_across_architectures_is_a_clear_error(trained_tiny_dir, tmp_path, char_tokenizer):
    from ponder.errors import PonderError
    from ponder.lm.tiny import TinyArch, build_tiny_model

    other = tmp_path / "wide"
    build_tiny_model(
        char_tokenizer, TinyArch(hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64)
    ).save_pretrained(other)
    char_tokenizer.save_pretrained(other)
    with pytest.raises(PonderError, match=r"same architecture.*only in .*wide.*layers\.2\."):
        run_audit(
            AuditJob(
                model=str(trained_tiny_dir),
                compare=str(other),
                task="add2",
                n=2,
                diagnostics=["sparsity"],
                out=str(tmp_path / "a"),
            ),
            progress=False,
        )
    assert not (tmp_path / "a" / "audit.json").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_renders_in_headless_chromium(audit_run, tmp_path):
    from PIL import Image

    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install -y chromium); CI must run this test")
        pytest.skip("chromium not installed (set CI=1 to make this a failure)")
    url = (audit_run / "report.html").resolve().as_uri()
    flags = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1200,4000",
    ]
    shot = tmp_path / "report.png"
    subprocess.run(
        flags + [f"--user-data-dir={tmp_path / 'p1'}", f"--screenshot={shot}", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        flags + [f"--user-data-dir={tmp_path / 'p2'}", "--dump-dom", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    img = Image.open(shot).convert("L")
    assert img.size == (1200, 4000)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # not blank: dark text on a light page
    assert sum(1 for p in img.getdata() if p < 128) > 1000
    text = dom.replace("&amp;", "&")
    for heading in HEADINGS.values():
        assert f"<h2>{heading}</h2>" in text, heading
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', dom)
    assert len(images) >= 6
    for b64 in images:
        Image.open(__import__("io").BytesIO(base64.b64decode(b64))).verify()


def test_unknown_diagnostic_is_a_clear_error(tmp_path):
    from ponder.errors import PonderError

    with pytest.raises(PonderError, match="unknown diagnostics.*'dtrr'.*think_at_n"):
        run_audit(AuditJob(model="tiny", task="add2", diagnostics=["dtrr"], out=str(tmp_path)), progress=False)


@pytest.mark.slow
def test_planning_series_over_checkpoints(trained_tiny_dir, rlp_dir, tmp_path, one_thread):
    data = run_audit(
        AuditJob(
            model=str(trained_tiny_dir),
            task="add2",
            n=3,
            samples=2,
            diagnostics=["planning_tokens"],
            checkpoints=[str(rlp_dir), str(trained_tiny_dir)],
            out=str(tmp_path),
        ),
        progress=False,
    )
    points = data["planning_tokens"]["checkpoints"]
    assert [p["name"] for p in points] == [str(trained_tiny_dir), str(rlp_dir), str(trained_tiny_dir)]
    # the same checkpoint sampled with the same seed twice gives the same figures
    assert {k: v for k, v in points[0].items() if k != "name"} == {k: v for k, v in points[2].items() if k != "name"}
    assert points[0]["traces"] == 6 and 0.0 <= points[0]["planning_token_share"] <= 1.0
