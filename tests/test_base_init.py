"""Base jobs that start from a trained model (``init``), and the cache of named base recipes."""

from __future__ import annotations

import pytest
import torch

from ponder.models.tiny_base import INIT_DEFAULT_TINY, BaseJob, lazy_base_job
from ponder.train.next_token import NextTokenConfig


def test_init_enters_the_fingerprint_and_default_recipes_keep_theirs(tmp_path):
    default = BaseJob().fingerprint()
    assert BaseJob(init=None, lazy_thoughts=0.0).fingerprint() == default  # later fields at neutral values
    from_tiny = BaseJob(init=INIT_DEFAULT_TINY).fingerprint()
    assert from_tiny != default
    assert BaseJob(init=str(tmp_path / "a")).fingerprint() != BaseJob(init=str(tmp_path / "b")).fingerprint()
    assert lazy_base_job().fingerprint() not in (default, from_tiny)


def test_cached_bases_keep_their_keys_when_settings_that_cannot_change_weights_are_added():
    # The cache keys of the default and demo bases since 4bfdc44: a change here retrains every user's
    # bases (10-30 min each on a CPU), so it must come from a change of the recipe itself.
    assert (BaseJob().fingerprint(), lazy_base_job().fingerprint()) == ("e871d750da", "25e051631a")
    tracked = BaseJob().train.model_copy(update={"report_to": ["tensorboard"]})
    assert BaseJob(train=tracked).fingerprint() == BaseJob().fingerprint()  # tracking never changes weights
    assert BaseJob(train=tracked.model_copy(update={"lr": 1e-3})).fingerprint() != BaseJob().fingerprint()


def test_a_job_with_init_continues_from_that_model(trained_tiny_dir, tmp_path, one_thread):
    from ponder.lm.load import load_hf_dir
    from ponder.models.tiny_base import run_base

    job = BaseJob(
        task="add2",
        init=str(trained_tiny_dir),
        think_fraction=1.0,
        lazy_thoughts=1.0,
        eval_n=4,
        train=NextTokenConfig(steps=2, batch_size=4, lr=1e-9, warmup_steps=0, save_every=10, max_length=64),
    )
    summary = run_base(job, tmp_path / "run", progress=False)
    assert summary["steps"] == 2
    start, _ = load_hf_dir(trained_tiny_dir)
    after, _ = load_hf_dir(tmp_path / "run" / "final")
    assert after.config.hidden_size == start.config.hidden_size  # the init's architecture, not arch's default
    for (name, a), b in zip(start.named_parameters(), after.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)  # lr 1e-9: still the init's weights


def test_ensure_base_trains_once_per_recipe(tmp_path, monkeypatch):
    from ponder.models import tiny_base

    monkeypatch.setenv("PONDER_CACHE", str(tmp_path))
    monkeypatch.delenv("PONDER_TINY_DIR", raising=False)
    calls = []

    def fake_run_base(job, out_dir, resume=False, progress=True, **kwargs):
        calls.append(job.fingerprint())
        (out_dir / "final").mkdir(parents=True)
        (out_dir / "final" / "config.json").write_text("{}")

    monkeypatch.setattr(tiny_base, "run_base", fake_run_base)
    lazy = tiny_base.ensure_lazy_tiny(progress=False)
    assert lazy == tmp_path / f"tiny-{lazy_base_job().fingerprint()}" / "final"
    assert tiny_base.ensure_lazy_tiny(progress=False) == lazy and len(calls) == 1  # cached: not retrained
    assert tiny_base.ensure_tiny(progress=False) != lazy and len(calls) == 2  # another recipe, another cache
    monkeypatch.setenv("PONDER_TINY_DIR", str(tmp_path / "mine"))
    assert tiny_base.base_dir() == tmp_path / "mine"  # the override names the default base only
    assert tiny_base.base_dir(lazy_base_job()) == lazy.parent


def test_base_cli_without_out_caches_under_the_recipe(monkeypatch, tmp_path):
    from ponder import cli
    from ponder.models.tiny_base import base_dir

    monkeypatch.setenv("PONDER_CACHE", str(tmp_path))
    seen = {}

    def fake_run_base(job, out_dir, resume=False, progress=True, **kwargs):
        seen["out"] = out_dir
        raise SystemExit(0)

    monkeypatch.setattr(cli, "run_base", fake_run_base)
    with pytest.raises(SystemExit):
        cli.main(["base", "--lazy-thoughts", "0.5", "--quiet"])
    assert seen["out"] == base_dir(BaseJob(lazy_thoughts=0.5)) != base_dir(BaseJob())


def test_base_seed_names_an_independent_recipe(tmp_path, monkeypatch):
    from ponder.errors import ModelLoadError
    from ponder.models import tiny_base
    from ponder.models.tiny_base import split_base_seed

    assert split_base_seed("tiny") == ("tiny", 0) and split_base_seed("tiny-lazy@2") == ("tiny-lazy", 2)
    assert split_base_seed("runs/x") is None and split_base_seed("smollm2-135m") is None
    with pytest.raises(ModelLoadError, match="whole number"):
        split_base_seed("tiny-lazy@one")
    assert lazy_base_job(0) == lazy_base_job()  # seed 0 is the cached demo base
    one = lazy_base_job(1)
    assert one.init == "tiny@1" and one.seed == 2 and one.fingerprint() != lazy_base_job().fingerprint()
    # the init enters the fingerprint as the recipe of the seed-1 default base
    assert BaseJob(init="tiny@1").fingerprint() != BaseJob(init="tiny").fingerprint()
    monkeypatch.setenv("PONDER_CACHE", str(tmp_path))
    trained = []

    def fake_run_base(job, out_dir, resume=False, progress=True, **kwargs):
        trained.append((job.seed, job.init))
        (out_dir / "final").mkdir(parents=True)
        (out_dir / "final" / "config.json").write_text("{}")

    monkeypatch.setattr(tiny_base, "run_base", fake_run_base)
    path = tiny_base.builtin_tiny_path("tiny-lazy@1", progress=False)
    assert path == str(tmp_path / f"tiny-{one.fingerprint()}" / "final") and trained == [(2, "tiny@1")]
    assert tiny_base.builtin_tiny_path("tiny@1", progress=False) == str(
        tmp_path / f"tiny-{BaseJob(seed=1).fingerprint()}" / "final"
    )


def test_ensure_base_starts_over_when_the_cached_partial_run_cannot_be_resumed(tmp_path, monkeypatch):
    from ponder.models import tiny_base
    from ponder.train.run_config import SettingsMismatchError

    monkeypatch.setenv("PONDER_CACHE", str(tmp_path))
    monkeypatch.delenv("PONDER_TINY_DIR", raising=False)
    calls = []

    def fake_run_base(job, out_dir, resume=False, progress=True, **kwargs):
        calls.append(resume)
        if resume:  # what an older ponder's checkpoint without its settings file raises
            raise SettingsMismatchError("checkpoint holds no base_job.json")
        (out_dir / "final").mkdir(parents=True)
        (out_dir / "final" / "config.json").write_text("{}")

    monkeypatch.setattr(tiny_base, "run_base", fake_run_base)
    final = tiny_base.ensure_tiny(progress=False)
    assert (final / "config.json").is_file() and calls == [True, False]
