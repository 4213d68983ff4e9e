"""LoRA adapters (peft): only the adapters train, the EMA teacher is an adapter on the shared base, files reload."""

import copy
import json

import pytest
import torch

pytest.importorskip("peft")

from ponder.data.sources import TaskSource  # noqa: E402
from ponder.data.synthetic import Addition  # noqa: E402
from ponder.lm import adapters  # noqa: E402
from ponder.lm.logprobs import token_logprobs  # noqa: E402
from ponder.lm.padding import pad_ids  # noqa: E402
from ponder.lm.tiny import TinyArch, build_tiny_model  # noqa: E402
from ponder.rl.ema import TEACHER_ADAPTER, EMATeacher  # noqa: E402
from ponder.rl.grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from ponder.rl.rlp import RLPConfig, RLPTrainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ARCH = TinyArch(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=128)
LORA = dict(lora_rank=4, lora_alpha=8.0)
RLP = dict(
    steps=2, docs_per_step=2, group_size=2, max_thought_tokens=3, context_length=16, lr=1e-2, min_reward_spread=0.0
)


def _model(tok):
    return build_tiny_model(tok, ARCH, seed=0).eval()


def _base_weights(model) -> dict[str, torch.Tensor]:
    # Named as in the bare model: peft renames a wrapped layer's weight to ``...base_layer.weight``, and the
    # next-token recipe injects the adapters only when training starts.
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def _adapter_weights(model, name=adapters.POLICY) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in adapters.adapter_parameters(model, name).items()}


def _rlp(tok, path, **kw) -> RLPTrainer:
    cfg = RLPConfig(**{**RLP, **LORA, **kw})
    return RLPTrainer(_model(tok), tok, TaskSource(Addition(2), seed=0), cfg, path)


def _logprobs(model, tok) -> torch.Tensor:
    ids, mask = pad_ids([tok("12+34=46")["input_ids"], tok("7+8=15")["input_ids"]], tok.pad_token_id)
    with torch.no_grad():
        return token_logprobs(model, ids, mask)


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_rlp_step_trains_the_adapter_only(char_tokenizer, tmp_path):
    trainer = _rlp(char_tokenizer, tmp_path)
    model = trainer.model
    assert adapters.is_adapted(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {id(p) for p in trainable}
    base, adapter = _base_weights(model), _adapter_weights(model)
    for _ in range(2):
        assert "skipped" not in trainer.train_step()
    assert not _changed(base, _base_weights(model))  # the base bit-identical
    assert _changed(adapter, _adapter_weights(model))  # the adapter trained
    teacher = trainer.recipe.ema
    assert teacher.is_adapter and teacher.model is None and teacher.num_updates == 2
    assert not any(p.requires_grad for p in teacher.parameters())
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in trainable}


def test_grpo_step_with_kl_to_the_initial_adapter_trains_the_adapter_only(char_tokenizer, tmp_path):
    cfg = GRPOConfig(
        steps=1,
        prompts_per_step=2,
        group_size=3,
        pool_size=4,
        max_thought_tokens=4,
        max_answer_tokens=3,
        lr=1e-2,
        reward="length",
        length_target=2,
        kl_coef=0.1,
        filter_equal=False,
        **LORA,
    )
    trainer = GRPOTrainer(_model(char_tokenizer), char_tokenizer, Addition(2), cfg, tmp_path)
    model = trainer.model
    base, adapter = _base_weights(model), _adapter_weights(model)
    metrics = trainer.train_step()
    assert "skipped" not in metrics and metrics["kl_to_ref"] == pytest.approx(0.0, abs=1e-6)
    assert not _changed(base, _base_weights(model))
    assert _changed(adapter, _adapter_weights(model))
    # The reference (kl_ref initial: tau 1) kept the initial adapter: B = 0, the base itself.
    assert all(not p.any() for k, p in _adapter_weights(model, TEACHER_ADAPTER).items() if "lora_B" in k)


def test_ema_adapter_teacher_equals_a_full_copy_teacher_without_copying_the_base(char_tokenizer):
    """Base + EMA adapter computes what a separate full model (base + the EMA adapter by hand, merged) computes."""
    tok, tau = char_tokenizer, 0.8
    model = adapters.add_lora(_model(tok), 4, 8.0)
    base_storage = {p.untyped_storage().data_ptr() for n, p in model.named_parameters() if "lora_" not in n}
    bytes_before = sum(p.numel() * p.element_size() for p in model.parameters())
    teacher = EMATeacher.from_model(model, tau=tau)
    by_hand = _adapter_weights(model)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # "optimizer steps" on the policy's adapter, each followed by the EMA update
        with torch.no_grad():
            for p in adapters.adapter_parameters(model).values():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        teacher.update(model)
        by_hand = {k: tau * v + (1 - tau) * _adapter_weights(model)[k] for k, v in by_hand.items()}
    full = copy.deepcopy(model)  # a second whole model: base + the hand-made EMA adapter, merged
    with torch.no_grad():
        for k, p in adapters.adapter_parameters(full).items():
            p.copy_(by_hand[k])
    full = full.merge_and_unload()
    with teacher.scope() as m:
        got = _logprobs(m, tok)
    torch.testing.assert_close(got, _logprobs(full, tok), atol=1e-5, rtol=0)
    # After the scope the policy's adapter is back in charge (and differs from the teacher's).
    assert model.active_adapters == [adapters.POLICY]
    assert (_logprobs(model, tok) - got).abs().max() > 1e-4
    # No second model: the teacher added its adapter's tensors only; the base's storage is the policy's.
    added = sum(p.numel() * p.element_size() for p in model.parameters()) - bytes_before
    assert added == sum(p.numel() * p.element_size() for p in teacher.parameters())
    assert added < 0.25 * bytes_before
    assert base_storage == {p.untyped_storage().data_ptr() for n, p in model.named_parameters() if "lora_" not in n}


def test_a_lora_run_saves_its_adapter_and_merged_model_and_both_reload(char_tokenizer, tmp_path):
    from ponder.models.lookup import load_model

    _model(char_tokenizer).save_pretrained(tmp_path / "base")
    char_tokenizer.save_pretrained(tmp_path / "base")
    lm = load_model(str(tmp_path / "base"), device="cpu")
    cfg = RLPConfig(**{**RLP, **LORA, "lora_save_merged": True, "save_every": 1})
    trainer = RLPTrainer(lm.model, lm.tokenizer, TaskSource(Addition(2), seed=0), cfg, tmp_path / "run")
    trainer.train(progress=False)
    final = tmp_path / "run" / "final"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in final.iterdir()}
    assert not (final / "model.safetensors").exists()  # the adapter only, not a second model
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tmp_path / "base")
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert adapters.is_adapter_dir(ckpt) and adapters.is_adapter_dir(ckpt / "ema")
    want = _logprobs(trainer.model, char_tokenizer)
    assert (want - _logprobs(load_model(str(tmp_path / "base"), device="cpu").model, char_tokenizer)).abs().max() > 1e-4
    for path in (final, final / "merged"):  # base + adapter, and the merged ordinary model
        got = load_model(str(path), device="cpu")
        assert not adapters.is_adapted(got.model)
        torch.testing.assert_close(_logprobs(got.model, got.tokenizer), want, atol=1e-5, rtol=0)


def test_a_killed_lora_run_resumes_to_the_uninterrupted_adapter(tmp_path, tiny_hf_dir):
    from safetensors.torch import load_file

    from ponder.cli import main
    from test_faults import job_argv, run_killed

    lora = ["--lora-rank", "2", "--lora-target-modules", "q_proj,v_proj", "--ema-dtype", "bf16", "--steps", "3"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*job_argv("rlp", tiny_hf_dir, full), *lora]) == 0
    run_killed([*job_argv("rlp", tiny_hf_dir, part), *lora], "before-save:2")
    assert main([*job_argv("rlp", tiny_hf_dir, part), *lora]) == 0
    for sub in ("final", "checkpoints/step-00000003/ema"):
        a, b = (load_file(str(run / sub / adapters.ADAPTER_WEIGHTS)) for run in (full, part))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
    assert any(v.any() for k, v in load_file(str(full / "final" / adapters.ADAPTER_WEIGHTS)).items() if "lora_B" in k)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lora-rank", "0"], "lora_rank: Input should be greater than or equal to 1"),
        (["--lora-rank", "2", "--lora-target-modules", "nonexistent_proj"], "lora target modules 'nonexistent_proj'"),
    ],
)
def test_bad_lora_flags_are_one_line_errors(flags, message, tmp_path, tiny_hf_dir, capsys):
    from ponder.cli import main
    from test_faults import job_argv

    assert main([*job_argv("rlp", tiny_hf_dir, tmp_path / "run", steps=1), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_next_token_training_trains_the_adapter_only_and_saves_it(char_tokenizer, tmp_path):
    """CPT/base on the engine take the engine's LoRA settings: the base weights stay, the adapter moves,
    final/ is the adapter, and it reloads to the trained model's log-probs."""
    from ponder.models.lookup import load_model
    from ponder.train.next_token import NextTokenConfig, train_next_token

    model = _model(char_tokenizer)
    model.save_pretrained(tmp_path / "base")
    char_tokenizer.save_pretrained(tmp_path / "base")
    model = load_model(str(tmp_path / "base"), device="cpu").model
    base = _base_weights(model)
    cfg = NextTokenConfig(steps=2, batch_size=4, lr=1e-2, warmup_steps=0, max_length=32, **LORA)
    docs = ["12+34=46", "7+8=15", "99+1=100", "5+5=10"] * 4
    train_next_token(model, char_tokenizer, lambda: iter(docs), cfg, tmp_path / "run", progress=False)
    # The adapters are injected into the caller's model in place (it computes with them): only they moved.
    assert not _changed(base, _base_weights(model))
    assert any(float(p.abs().max()) > 0 for k, p in model.named_parameters() if "lora_B" in k)
    final = tmp_path / "run" / "final"
    assert adapters.is_adapter_dir(final) and not (final / "model.safetensors").exists()
    got = load_model(str(final), device="cpu").model
    torch.testing.assert_close(
        _logprobs(got, char_tokenizer), _logprobs(model.eval(), char_tokenizer), atol=1e-5, rtol=0
    )
