"""The LM environment: outcomes, call accounting, cache, rejections and bad input (small random tiny model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ponder.data import get_task
from ponder.data.task import GeneratedTask, Problem
from ponder.errors import PonderError
from ponder.lm.load import LM
from ponder.lm.thinking import ThinkSettings
from ponder.plan.edits import Edit
from ponder.plan.env import Outcome, PlanEnv
from ponder.plan.state import Chain, render_prompt


@pytest.fixture
def lm(random_tiny, one_thread):
    model, tok = random_tiny
    return LM(model, tok, "random-tiny")


def test_outcome_value_by_hand():
    assert Outcome(1.0, 0.5, -2.0, 4).value == pytest.approx(0.5 * (1.0 + 0.8))
    assert Outcome(0.0, 1e-9, -25.0, 4).value == 0.0  # the log-likelihood term is clipped at 0
    assert Outcome(0.75, None, None, 4).value == 0.75  # no reference: accuracy alone


def test_calls_tokens_and_cache(lm):
    env = PlanEnv(lm, get_task("add3"), n_train=3, n_heldout=2, max_thought_tokens=8, max_answer_tokens=4)
    out = env.evaluate(Chain())  # the empty chain is a valid state: the bare input
    assert 0.0 <= out.accuracy <= 1.0 and out.loglik < 0 and out.n == 3
    # one call per input: the answer and the reference's log-likelihood come from one prefill
    assert env.counters.calls == 3 and env.counters.evaluations == 1 and env.counters.tokens > 0
    again = env.evaluate(Chain(steps=()))
    assert again == out and env.counters.calls == 3 and env.counters.cache_hits == 1
    env.measure(Chain())
    assert env.counters.calls == 3 and env.counters.heldout_calls == 2  # held-out is not in the budget
    env.evaluate(Chain(answer_format="direct"))
    assert env.counters.calls == 6 and env.counters.evaluations == 2
    env.propose(["1+"], n=3, max_new_tokens=4)
    assert env.counters.calls == 9 and env.counters.proposal_calls == 3


def test_per_input_scores_average_to_the_outcome_and_generated_tokens_are_counted(lm):
    env = PlanEnv(lm, get_task("add3"), n_train=3, n_heldout=2, max_thought_tokens=8, max_answer_tokens=4)
    for chain in (Chain(steps=("1+",)), Chain(answer_format="direct")):
        calls = env.counters.calls
        scores = env.per_input(chain, env.train)
        assert env.counters.calls == calls  # per_input itself counts nothing (evaluate and measure do)
        before = env.counters.generated_tokens
        out = env.evaluate(chain)
        assert len(scores.correct) == len(scores.loglik) == 3 and scores.calls == 3
        assert out.accuracy == pytest.approx(sum(scores.correct) / 3)
        assert out.loglik == pytest.approx(sum(scores.loglik) / 3, rel=1e-5)
        # The model wrote at least one answer token per input, and in the think format up to 8 thought tokens more.
        wrote = env.counters.generated_tokens - before
        assert wrote == scores.generated and 3 <= wrote <= 3 * (4 + (8 if chain.answer_format == "think" else 0))


@pytest.mark.parametrize("chat_template", ["off", "on"])
def test_chains_reach_the_model_as_text_unless_the_chat_template_is_asked_for(lm, monkeypatch, chat_template):
    """A chain is a text prompt: by default its ids are the text's, even for a tokenizer with a chat template."""
    import copy

    from ponder.plan import env as env_module

    tok = copy.deepcopy(lm.tokenizer)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    seen = []
    real = env_module.answer_and_score

    def recording(model, tokenizer, rules, contexts, references, max_new_tokens):
        seen.extend(list(p) for p in contexts)
        return real(model, tokenizer, rules, contexts, references, max_new_tokens)

    monkeypatch.setattr(env_module, "answer_and_score", recording)
    env = PlanEnv(
        LM(lm.model, tok, "templated"),
        get_task("add3"),
        n_train=2,
        n_heldout=1,
        think_settings=ThinkSettings(chat_template=chat_template),
    )
    chain = Chain(instructions=("Add.",), exemplars=("1+2=3",), answer_format="direct")
    env.evaluate(chain)
    texts = [render_prompt(chain, p.prompt) for p in env.train]
    if chat_template == "off":
        assert seen == tok(texts, add_special_tokens=True)["input_ids"]
    else:
        assert seen == [tok(f"<user>{t}<assistant>", add_special_tokens=False)["input_ids"] for t in texts]


def test_rejected_edits_are_counted(lm):
    env = PlanEnv(lm, get_task("add3"), n_train=2, n_heldout=1, max_prompt_tokens=40)
    chain = Chain(instructions=("short",))
    assert env.try_edit(chain, Edit("remove_instruction", index=3)) is None  # does not apply
    assert env.try_edit(chain, Edit("add_exemplar", payload="x" * 60)) is None  # prompt too long
    assert env.counters.rejected == 2 and env.counters.calls == 0
    assert env.try_edit(chain, Edit("remove_instruction")) == Chain()
    with pytest.raises(PonderError):
        env.evaluate(Chain(instructions=("y" * 80,)))


class _NoReference(GeneratedTask):
    name = "noref"

    def sample(self, rng):
        a = rng.randint(100, 999)
        return Problem(prompt=f"{a}=", answer="")

    def score(self, problem, completion):  # a scorer that needs no reference: any digit answer is right
        return float(any(ch.isdigit() for ch in completion))


def test_task_without_reference_uses_the_scorer_alone(lm):
    env = PlanEnv(lm, _NoReference(), n_train=2, n_heldout=1, max_thought_tokens=4, max_answer_tokens=3)
    out = env.evaluate(Chain(answer_format="direct"))
    assert out.ref_prob is None and out.loglik is None and out.value == out.accuracy
    assert env.counters.calls == 2  # no reference scoring calls


def test_task_with_neither_reference_nor_scorer_is_a_clear_error(lm):
    problems = [Problem(prompt="1=", answer="")]
    task = SimpleNamespace(name="bare", problems=lambda n, seed=0, split="train": problems)
    with pytest.raises(PonderError, match="neither reference answers nor a scorer"):
        PlanEnv(lm, task)


def test_think_format_needs_think_tokens(lm):
    class NoThink:
        def __init__(self, tok):
            self._tok = tok

        def __getattr__(self, name):
            return getattr(self._tok, name)

        def __call__(self, *a, **k):
            return self._tok(*a, **k)

        def convert_tokens_to_ids(self, t):
            return self._tok.unk_token_id

    bare = LM(lm.model, NoThink(lm.tokenizer), "no-think")
    env = PlanEnv(bare, get_task("add3"), n_train=1, n_heldout=1, max_answer_tokens=2)
    with pytest.raises(PonderError, match="think"):
        env.evaluate(Chain())


def test_heldout_and_training_inputs_are_distinct_problems(lm):
    # add1's test split holds 10 problems; 16 draws repeat six of them (the task allows it once its space
    # runs out). The environment keeps each problem once, in the order drawn, and counts one call per problem.
    draws = get_task("add1").problems(16, seed=0, split="test")
    assert len({p.prompt for p in draws}) == 10 < len(draws)
    env = PlanEnv(lm, get_task("add1"), n_train=4, n_heldout=16, max_thought_tokens=4, max_answer_tokens=3)
    prompts = [p.prompt for p in env.heldout]
    assert prompts == list(dict.fromkeys(p.prompt for p in draws))
    env.measure(Chain())
    assert env.counters.heldout_calls == 10
    big = PlanEnv(lm, get_task("add2"), n_train=4, n_heldout=16)  # a space large enough: all 16 kept
    assert len({p.prompt for p in big.heldout}) == 16
