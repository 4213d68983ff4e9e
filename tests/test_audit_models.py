"""Planted-signal tests of the audit diagnostics that call a model (ponder.audit)."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ponder.audit.dtr import dtr, response_divergences
from ponder.audit.policy_entropy import continuation_entropy, mean_entropy, perturb
from ponder.audit.step_gain import answer_logliks
from ponder.lm.thinking import ThinkSettings, ThoughtFormat, force_thoughts


class ChainLM(nn.Module):
    """Tokens 0..3 predict their successor (i + 1) % 4 with certainty; tokens 4..7 predict uniformly."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(8, 1)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, **_):
        logits = torch.zeros(*input_ids.shape, 8)
        chain = input_ids < 4
        nxt = (input_ids + 1) % 4
        logits[chain] = logits[chain].scatter(-1, nxt[chain][:, None], 200.0)
        return SimpleNamespace(logits=logits)


def test_on_vs_off_policy_entropy_recovers_planted_values():
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=None)
    own = [1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]  # the chain the model itself would write after [0]
    on = continuation_entropy(ChainLM(), tok, [[0]], [own])
    assert mean_entropy(on) == pytest.approx(0.0, abs=1e-6)
    noisy, pos = perturb(own, 0.2, pool=[4, 5, 6, 7], rng=random.Random(1))
    assert len(pos) == 2
    # a perturbed token at index p (p < len-1) makes the distribution predicting token p+1 uniform
    expected = math.log(8) * sum(p < len(own) - 1 for p in pos) / (len(own) - 1)
    off = continuation_entropy(ChainLM(), tok, [[0]], [noisy])
    assert mean_entropy(off) == pytest.approx(expected, rel=1e-5)


def _silence_blocks(model):
    """Zero every block's output projections: each layer adds nothing, all lens distributions are equal."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model


def test_dtr_of_a_model_whose_layers_do_nothing(random_tiny, one_thread):
    model, tok = random_tiny
    _silence_blocks(model)
    ctx = [tok("12+34=")["input_ids"], tok("5+6=")["input_ids"]]
    resp = [tok("2+4+0=06", add_special_tokens=False)["input_ids"], tok("11", add_special_tokens=False)["input_ids"]]
    divs = response_divergences(model, tok, ctx, resp, batch_size=1)
    L = model.config.num_hidden_layers
    assert [tuple(d.shape) for d in divs] == [(L, 8), (L, 2)]
    assert max(float(d.max()) for d in divs) < 1e-5  # every layer already predicts what the last does
    assert dtr(divs[0]) == 0.0  # settles at layer 1: never deep
    assert dtr(divs[0], g=-1.0) == 1.0  # a threshold nothing reaches: all settle at L, all deep


def test_dtr_divergences_match_the_lens(random_tiny, one_thread):
    from ponder.lm.lens import lens_jsd
    from ponder.lm.padding import pad_ids

    model, tok = random_tiny
    ctx, resp = tok("7+8=")["input_ids"], tok("15", add_special_tokens=False)["input_ids"]
    (div,) = response_divergences(model, tok, [ctx], [resp])
    ids, mask = pad_ids([ctx + resp], tok.pad_token_id)
    full = lens_jsd(model, ids, mask)[1:, 0]
    # response token k is predicted at position len(ctx) - 1 + k
    assert torch.allclose(div, full[:, len(ctx) - 1 : len(ctx) - 1 + len(resp)])
    assert torch.all(div[-1] == 0)


def test_step_gain_with_a_scorer_that_rewards_each_step(monkeypatch, char_tokenizer):
    import ponder.audit.step_gain as step_gain
    from ponder.lm.score import PairScores

    tok = char_tokenizer

    def fake_score_pairs(model, tokenizer, contexts, continuations, batch_size=None):
        # log p(answer) = -10 + 1.5 * (steps in the thought) + 4 if the step "3+4+1=08" is present
        texts = [tokenizer.decode(c) for c in contexts]
        sums = [
            -10 + 1.5 * (len(c.split("<think>")[1].split("</think>")[0].split())) + 4.0 * ("3+4+1=08" in c)
            for c in texts
        ]
        return PairScores(logprobs=[], sum=torch.tensor(sums), num_tokens=torch.ones(len(sums)))

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    monkeypatch.setattr(step_gain, "score_pairs", fake_score_pairs)
    lls = answer_logliks(None, tok, tok("59+34=")["input_ids"], ids("9+4+0=13 5+3+1=09"), "93")
    assert lls == pytest.approx([-10.0, -8.5, -7.0])
    lls = answer_logliks(None, tok, tok("x")["input_ids"], ids("1+1+0=02 3+4+1=08 0+0+0=00"), "1")
    assert [b - a for a, b in zip(lls, lls[1:])] == pytest.approx([1.5, 5.5, 1.5])


def test_forcing_replaces_every_early_close(random_tiny, one_thread):
    from ponder.lm.delimiters import think_token_ids

    model, tok = random_tiny
    _, close_id = think_token_ids(tok)
    head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[close_id] = 10.0  # the model always closes its thought at once
    model.lm_head = head
    fmt = ThoughtFormat.of(model, tok, ThinkSettings(min_thought_tokens=0))  # the model may close at once
    prompts, wait = fmt.prompt_ids(tok, ["1+2="]), tok("Wait", add_special_tokens=False)["input_ids"]
    thoughts, forcings = force_thoughts(model, tok, fmt, prompts, budget=10, force_ids=wait, max_forcings=4)
    assert tok.decode(thoughts.ids[0]) == "WaitWaitWa" and forcings == [3] and not thoughts.closed[0]
    thoughts, forcings = force_thoughts(model, tok, fmt, prompts, budget=10, force_ids=wait, max_forcings=1)
    assert tok.decode(thoughts.ids[0]) == "Wait" and forcings == [1] and thoughts.closed[0]


def test_validity_harness_recovers_a_planted_dependence_on_exemplars(monkeypatch):
    import ponder.audit.validity as validity
    from ponder.audit.validity import validity_accuracy
    from ponder.data import get_task

    task = get_task("add2")
    problems = task.problems(6, split="test")
    exemplars = task.problems(2, seed=1)

    class Fmt:
        def prompt_ids(self, tokenizer, prompts):
            return list(prompts)  # the texts stand in for ids in this fake

    def fake_think_then_answer(model, tokenizer, fmt, prompts, **kw):
        # answers right only after valid worked exemplars; after answer-only ones, right on half
        texts = []
        for i, prompt in enumerate(prompts):
            p = problems[i]
            valid = all(f"<think>{e.thought}</think>" in prompt for e in exemplars)
            answer_only = "<think>" not in prompt
            right = valid or (answer_only and i % 2 == 0)
            texts.append(f"<think></think>{p.answer if right else 'x'}")
        return SimpleNamespace(texts=lambda tokenizer: texts)

    monkeypatch.setattr(validity, "think_then_answer", fake_think_then_answer)
    monkeypatch.setattr(validity.ThoughtFormat, "of", classmethod(lambda cls, model, tokenizer, settings=None: Fmt()))
    r = validity_accuracy(None, None, task, exemplars, problems)
    assert r.accuracy == {"valid": 1.0, "invalid": 0.0, "answer_only": 0.5}
