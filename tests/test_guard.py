"""Non-finite numbers never reach the weights: settings, advantages, the step guard, the final check."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import BaseModel

from ponder.cli import main
from ponder.config import build_config
from ponder.data.sources import TaskSource
from ponder.data.synthetic import Addition
from ponder.errors import ConfigError
from ponder.rl.advantages import group_advantages
from ponder.train.guard import step_if_finite

JOBS = {
    "base": "ponder.models.tiny_base:BaseJob",
    "eval": "ponder.jobs.eval:EvalJob",
    "rlp": "ponder.jobs.rlp:RLPJob",
    "cpt": "ponder.jobs.rlp:CPTJob",
    "grpo": "ponder.jobs.grpo:GRPOJob",
    "ttrl": "ponder.jobs.grpo:TTRLJob",
    "demo": "ponder.jobs.demo:DemoJob",
    "audit": "ponder.jobs.audit:AuditJob",
    "plan": "ponder.jobs.plan:PlanJob",
}


def job_class(name: str) -> type[BaseModel]:
    import importlib

    module, cls = JOBS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def float_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every float (or optional float) setting, nested blocks included."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += float_fields(ann, f"{prefix}{name}.")
        elif ann is float or ann == float | None:
            out.append(f"{prefix}{name}")
    return out


@pytest.mark.parametrize("job", list(JOBS))
def test_every_float_setting_rejects_inf_and_nan(job):
    cls = job_class(job)
    fields = float_fields(cls)
    assert fields
    for path in fields:
        for bad in ("inf", "-inf", "nan"):
            with pytest.raises(ConfigError, match=rf"{path}: Input should be a finite number"):
                build_config(cls, None, {path: bad})


def test_huge_finite_rewards_give_finite_advantages():
    rewards = torch.tensor([[3e38, 3e38, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    grpo = group_advantages(rewards, correction="none", scale="std")
    assert torch.isfinite(grpo).all()
    torch.testing.assert_close(grpo[0], torch.tensor([1.0, 1.0, -1.0, -1.0]) * math.sqrt(3) / 2)
    # ordinary rewards keep fp32 arithmetic: bit-identical to the formula
    r = rewards[1]
    assert torch.equal(grpo[1], (r - r.mean()) / (r.std() + 1e-6))
    rlp = group_advantages(rewards, correction="rlp")
    assert not torch.isnan(rlp).any() and torch.isfinite(rlp[0]).all()
    torch.testing.assert_close(rlp[0], torch.tensor([2e38, 2e38, -2e38, -2e38]), rtol=1e-6, atol=0)


def _sgd_model():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched


@pytest.mark.parametrize("spoil", ["loss", "grad"])
def test_guard_skips_a_non_finite_step_and_touches_nothing(spoil):
    model, opt, sched = _sgd_model()
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.ones(2, 3)).sum()
    if spoil == "loss":
        loss = loss * float("nan")
    loss.backward()
    if spoil == "grad":
        model.weight.grad[0, 0] = float("inf")
    out = step_if_finite(loss, model.parameters(), opt, sched, grad_clip=1.0)
    assert not out.stepped and out.loss_finite == (spoil == "grad")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.state_dict()["state"] == {} and sched.last_epoch == 0
    assert all(p.grad is None for p in model.parameters())
    loss = model(torch.ones(2, 3)).sum()
    loss.backward()
    out = step_if_finite(loss, model.parameters(), opt, sched, grad_clip=1.0)
    assert out.stepped and math.isfinite(out.grad_norm) and sched.last_epoch == 1
    assert not torch.equal(before[0], model.weight)


def _spoil_loss(module, monkeypatch):
    real = module.clipped_surrogate

    def nan_loss(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(module, "clipped_surrogate", nan_loss)


def test_rlp_step_with_a_non_finite_loss_is_skipped(random_tiny, tmp_path, monkeypatch, one_thread):
    import ponder.train.engine as engine_mod
    from ponder.rl.rlp import RLPConfig, RLPTrainer

    model, tok = random_tiny
    cfg = RLPConfig(steps=1, docs_per_step=2, group_size=2, max_thought_tokens=4, context_length=32, lr=1e-2)
    trainer = RLPTrainer(model, tok, TaskSource(Addition(2)), cfg, tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _spoil_loss(engine_mod, monkeypatch)
    m = trainer.train_step()
    assert m["skipped"] == 1 and trainer.counters["skipped_nonfinite"] == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert trainer.optimizer.state_dict()["state"] == {} and trainer.recipe.ema.num_updates == 0


def test_grpo_step_with_a_non_finite_loss_is_skipped(random_tiny, tmp_path, monkeypatch, one_thread):
    import ponder.train.engine as engine_mod
    from ponder.rewards import REWARDS
    from ponder.rl.grpo import GRPOConfig, GRPOTrainer

    model, tok = random_tiny
    monkeypatch.setitem(REWARDS, "index", lambda p, c, g, **_: torch.arange(len(c)).float())
    cfg = GRPOConfig(steps=1, prompts_per_step=2, group_size=3, pool_size=4, max_thought_tokens=4,
                     max_answer_tokens=3, reward="index", no_answer_reward=-1.0)  # fmt: skip
    trainer = GRPOTrainer(model, tok, Addition(2), cfg, tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _spoil_loss(engine_mod, monkeypatch)
    m = trainer.train_step()
    assert m["skipped"] == 1 and trainer.counters["skipped_nonfinite"] == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert trainer.optimizer.state_dict()["state"] == {}


def test_grpo_trains_on_finite_rewards_near_the_float_limit(random_tiny, tmp_path, monkeypatch, one_thread):
    from ponder.rewards import REWARDS
    from ponder.rl.grpo import GRPOConfig, GRPOTrainer

    model, tok = random_tiny
    monkeypatch.setitem(REWARDS, "huge", lambda p, c, g, **_: torch.tensor([3e38, 3e38, 0.0] * (len(c) // 3)))
    task = Addition(2)
    monkeypatch.setattr(task, "extract_answer", lambda text: "0")  # every completion answers: the mix is used
    cfg = GRPOConfig(steps=1, prompts_per_step=2, group_size=3, pool_size=4, max_thought_tokens=4,
                     max_answer_tokens=3, reward="huge", lr=1e-3)  # fmt: skip
    trainer = GRPOTrainer(model, tok, task, cfg, tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = trainer.train_step()
    assert m["groups_trained"] == 2 and "skipped" not in m and trainer.counters["skipped_nonfinite"] == 0
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_next_token_steps_with_a_nan_loss_are_skipped(random_tiny, tmp_path, one_thread):
    from ponder.train.next_token import NextTokenConfig, train_next_token

    model, tok = random_tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hook = model.lm_head.register_forward_hook(lambda mod, inp, out: out * float("nan"))
    cfg = NextTokenConfig(steps=2, batch_size=2, max_length=16, save_every=10, log_every=1)
    summary = train_next_token(model, tok, lambda: iter(["1+1=2"] * 10), cfg, tmp_path, progress=False)
    hook.remove()
    assert summary["skipped_nonfinite"] == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


RUN = ["--task", "add2", "--steps", "1", "--docs-per-step", "2", "--group-size", "2", "--max-thought-tokens", "4",
       "--context-length", "32", "--quiet"]  # fmt: skip


def test_an_overflowing_learning_rate_fails_without_final(tmp_path, tiny_hf_dir, one_thread, capsys):
    out = tmp_path / "run"
    assert main(["rlp", "--model", str(tiny_hf_dir), "--out", str(out), *RUN, "--lr", "1e300"]) == 2
    err = capsys.readouterr().err
    assert "overflowed" in err and "lower --lr" in err and "Traceback" not in err
    assert not (out / "final").exists()


def test_a_run_ending_with_non_finite_weights_fails_without_final(
    tmp_path, tiny_hf_dir, monkeypatch, one_thread, capsys
):
    import ponder.train.engine as engine_mod

    real = engine_mod.step_if_finite

    def step_then_spoil(loss, parameters, *args, **kwargs):  # a finite step that still ends in NaN weights
        params = list(parameters)
        out = real(loss, params, *args, **kwargs)
        with torch.no_grad():
            params[0].fill_(float("nan"))
        return out

    monkeypatch.setattr(engine_mod, "step_if_finite", step_then_spoil)
    out = tmp_path / "run"
    assert main(["rlp", "--model", str(tiny_hf_dir), "--out", str(out), *RUN]) == 2
    assert "non-finite weights" in capsys.readouterr().err
    assert not (out / "final").exists()
