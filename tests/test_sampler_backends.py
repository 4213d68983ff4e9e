"""GRPO and TTRL sample through the run's backend (transformers or vLLM) with one Sampling setting.

vLLM is not installed here: the stand-in of tests/fake_vllm.py gets a greedy engine over the policy
itself (``GreedyLLM``: it reads the prompt ids, honours the logit-bias bans, the stop tokens, the
minimum length and the budget, and reports raw log-probs), so the same completions drawn through
either backend must give GRPO the same batch: ids, action mask, behaviour log-probs, advantages.
What it cannot show: that vLLM itself behaves so (never run on a real vLLM).
"""

from __future__ import annotations

import copy

import pytest
import torch

import fake_vllm
from ponder.cli import build_parser
from ponder.config import config_from_args
from ponder.data.synthetic import Addition
from ponder.jobs.grpo import GRPOJob, TTRLJob
from ponder.lm.delimiters import think_token_ids
from ponder.lm.thinking import Sampling, ThoughtFormat
from ponder.rl import vllm_backend
from ponder.rl.generation import sampling_of
from ponder.rl.grpo import GRPOConfig, GRPOTrainer
from ponder.rl.ttrl import TTRLConfig, TTRLTrainer


class GreedyLLM(fake_vllm.LLM):
    """The fake engine, drawing greedily from ``policy`` (a full forward per token) instead of a random walk."""

    policy = None

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, **kwargs):
        assert not self.sleeping and self.weights is not None
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        self.calls.append(("generate", (prompts, params)))
        return [
            fake_vllm.RequestOutput(str(i), None, list(p["prompt_token_ids"]), None, self._greedy(p, sp), True)
            for i, (p, sp) in enumerate(zip(prompts, params))
        ]

    @torch.no_grad()
    def _greedy(self, prompt, sp):
        assert sp.top_p <= 1e-3, "greedy stand-in: run with a top-p that makes ponder's sampler greedy too"
        assert sp.logprobs == 0 and sp.detokenize is False
        ids, stops = list(prompt["prompt_token_ids"]), set(sp.stop_token_ids or [])
        banned = [t for t, b in (sp.logit_bias or {}).items() if b <= vllm_backend.BAN]
        toks, logprobs, stop = [], [], None
        while len(toks) < sp.max_tokens:
            logits = self.policy(input_ids=torch.tensor([ids + toks])).logits[0, -1].float()
            raw = logits.log_softmax(-1)  # raw_logprobs: the model's distribution at temperature 1
            biased = logits.clone()
            biased[banned] = float("-inf")
            if len(toks) < sp.min_tokens:
                biased[list(stops)] = float("-inf")
            tok = int(biased.argmax())
            toks.append(tok)
            logprobs.append({tok: fake_vllm.Logprob(float(raw[tok]), rank=1)})
            if tok in stops:
                stop = tok
                break
        finish = "stop" if stop is not None else "length"
        return [fake_vllm.CompletionOutput(0, "", toks, None, logprobs, finish, stop)] * sp.n


@pytest.fixture
def policy(trained_tiny_dir):
    """The tiny model trained on addition: greedy, it closes its thoughts itself and ends its answers at EOS."""
    from ponder.lm.load import load_pretrained

    lm = load_pretrained(trained_tiny_dir, device="cpu")
    return lm.model.eval(), lm.tokenizer


@pytest.fixture
def greedy_vllm(monkeypatch, policy):
    module = fake_vllm.install(monkeypatch)
    monkeypatch.setattr(module, "LLM", GreedyLLM)
    monkeypatch.setattr(GreedyLLM, "policy", policy[0])
    monkeypatch.setattr(GreedyLLM, "instances", fake_vllm.LLM.instances)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(vllm_backend, "on_cuda", lambda model: True)
    return module


#: A draw both backends make greedily (top-p keeps the top token only), log-probs at temperature 1.
GREEDY = dict(top_p=1e-6, logprob_temperature="one", max_thought_tokens=24, max_answer_tokens=8)


def _step(trainer_cls, cfg, model, tok, tmp_path):
    trainer = trainer_cls(model, tok, Addition(2), cfg, tmp_path)
    return trainer, trainer.recipe.make_step(trainer)


@pytest.mark.parametrize(
    "trainer_cls,config_cls,extra",
    [(GRPOTrainer, GRPOConfig, {}), (TTRLTrainer, TTRLConfig, {"group_size": 3, "train_samples": 2})],
)
def test_grpo_and_ttrl_through_vllm_give_the_transformers_batch(
    greedy_vllm, policy, tmp_path, one_thread, trainer_cls, config_cls, extra
):
    model, tok = policy
    open_id, close_id = think_token_ids(tok)
    settings = dict(prompts_per_step=3, group_size=2, filter_equal=False, filter_hard=False, micro_batch=None)
    settings.update(GREEDY, **extra)
    steps = {}
    for backend in ("transformers", "vllm"):
        cfg = config_cls(generation_backend=backend, **settings)
        trainer, sb = _step(trainer_cls, cfg, copy.deepcopy(model), tok, tmp_path / backend)
        assert trainer.recipe.backend.name == backend
        steps[backend] = sb
    a, b = steps["transformers"].batch, steps["vllm"].batch
    assert len(a) == len(b) > 0
    # The draw exercises the rules: thoughts the model closed itself (</think> an action), answers ended by EOS.
    closed_by_model = (b.input_ids == close_id) & b.loss_mask
    assert closed_by_model.any(dim=1).all()
    assert all(b.sequence(r)[-1] == tok.eos_token_id for r in range(len(b)))
    assert [a.sequence(r) for r in range(len(a))] == [b.sequence(r) for r in range(len(b))]
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.loss_mask, b.loss_mask)
    # Behaviour log-probs: the engine's, back through the backend (a full forward vs ponder's KV cache).
    assert b.behaviour_logp[b.loss_mask].abs().min() > 0
    torch.testing.assert_close(b.behaviour_logp, a.behaviour_logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steps["vllm"].advantages, steps["transformers"].advantages)
    # What reached the engine: ids only, the thought after <think>, the answer after </think>, bans as logit bias.
    (llm,) = greedy_vllm.LLM.instances
    (thought_prompts, thought_params), (answer_prompts, answer_params) = [
        args for name, args in llm.calls if name == "generate"
    ]
    assert all(p["prompt_token_ids"][-1] == open_id for p in thought_prompts)
    assert all(close_id in p["prompt_token_ids"] for p in answer_prompts)
    assert len(answer_prompts) == len(thought_prompts) * settings["group_size"]
    fmt = ThoughtFormat.of(model, tok)
    assert set(thought_params[0].logit_bias) == set(fmt.thought_rules().ban_ids)
    assert set(answer_params[0].logit_bias) == {open_id, close_id}
    assert thought_params[0].stop_token_ids == [close_id] and answer_params[0].stop_token_ids == list(fmt.eos_ids)
    assert (thought_params[0].max_tokens, answer_params[0].max_tokens) == (24, 8)
    assert "update_weights" in [name for name, _ in llm.calls]


def test_answers_are_cut_where_the_one_sampler_stops(fake, random_tiny):
    """vLLM gets no text: the backend cuts each answer after the token that completes a stop string."""
    model, tok = random_tiny
    backend = vllm_backend.VLLMBackend(model, tok, ThoughtFormat.of(model, tok))
    (llm,) = fake.LLM.instances
    rows = {
        "\n7\n8": (3, True),  # a leading newline does not end an answer: the one after "7" does
        "12": (3, True),  # ended by EOS (kept: 1, 2, EOS)
        "123": (3, False),  # ran into the budget
    }
    outs = []
    for text in rows:
        toks = tok.encode(text, add_special_tokens=False) + ([tok.eos_token_id] if text == "12" else [])
        lps = [{t: fake_vllm.Logprob(-0.1 * (i + 1))} for i, t in enumerate(toks)]
        outs.append(
            fake_vllm.RequestOutput("0", None, [1], None, [fake_vllm.CompletionOutput(0, "", toks, None, lps)], True)
        )
    llm.generate = lambda prompts, params, use_tqdm=False: outs
    backend._wake()
    ids, logprobs, finished = backend._answers([[1]] * 3, Sampling(1.0, max_answer_tokens=8), [None] * 3)
    assert [len(x) for x in ids] == [n for n, _ in rows.values()]
    assert finished.tolist() == [f for _, f in rows.values()]
    assert tok.decode(ids[0]) == "\n7\n" and ids[1][-1] == tok.eos_token_id
    assert logprobs[0].tolist() == pytest.approx([-0.1, -0.2, -0.3])


@pytest.fixture
def fake(monkeypatch):
    module = fake_vllm.install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(vllm_backend, "on_cuda", lambda model: True)
    return module


@pytest.mark.parametrize("command,job_cls", [("grpo", GRPOJob), ("ttrl", TTRLJob)])
def test_the_sampling_settings_round_trip_from_the_cli(command, job_cls):
    flags = "--generation-backend vllm --temperature 0.5 --top-p 0.9 --max-thought-tokens 7 --max-answer-tokens 3"
    flags += " --sample-batch-size 2 --logprob-temperature one"
    args = build_parser().parse_args([command, *flags.split()])
    job = config_from_args(job_cls, args)
    config_cls = GRPOConfig if command == "grpo" else TTRLConfig
    cfg = config_cls(**job.model_dump(include=set(config_cls.model_fields)))  # as jobs.grpo builds it
    assert cfg.generation_backend == "vllm"
    assert sampling_of(cfg, 1.0) == Sampling(
        temperature=0.5, top_p=0.9, max_thought_tokens=7, max_answer_tokens=3, batch_size=2, logprob_temperature=1.0
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--generation-backend", "ray"])


def test_rlp_has_the_same_backend_setting():
    from ponder.rl.generation import SamplerSettings
    from ponder.rl.rlp import RLPConfig

    assert issubclass(RLPConfig, SamplerSettings) and issubclass(GRPOConfig, SamplerSettings)
    assert repr(RLPConfig.model_fields["generation_backend"]) == repr(GRPOConfig.model_fields["generation_backend"])
    sampling = sampling_of(RLPConfig(temperature=0.7, top_p=0.95, max_thought_tokens=12), None)
    assert (sampling.temperature, sampling.top_p, sampling.max_thought_tokens, sampling.think) == (0.7, 0.95, 12, True)


def test_a_vllm_engine_refuses_a_draw_at_another_logprob_temperature(fake, random_tiny):
    from ponder.errors import PonderError

    model, tok = random_tiny
    backend = vllm_backend.VLLMBackend(model, tok, ThoughtFormat.of(model, tok), logprob_temperature=1.0)
    assert fake.LLM.instances[0].kwargs["logprobs_mode"] == "raw_logprobs"
    with pytest.raises(PonderError, match="logprob temperature"):
        backend.generate([[1, 2]], 2, Sampling(0.7, max_thought_tokens=3))
