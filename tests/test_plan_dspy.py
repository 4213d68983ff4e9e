"""DSPy's optimizers on ponder's sampler: every call counted, prompts reach the model as ponder's ids.

Skipped without the optional extra ``dspy``. The LM is a small random-init tiny model (a fake: its
answers are noise, what is tested is the plumbing and the accounting).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

dspy = pytest.importorskip("dspy")

from ponder.data.registry import get_task  # noqa: E402
from ponder.lm.thinking import ThinkSettings, ThoughtFormat  # noqa: E402
from ponder.plan import dspy_lm  # noqa: E402
from ponder.plan.dspy_lm import PlainAdapter, PonderLM, message_ids, plain_prompt  # noqa: E402
from ponder.plan.env import Counters, PlanEnv  # noqa: E402
from ponder.plan.state import Chain, render_prompt  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture
def lm(random_tiny):
    model, tok = random_tiny
    return SimpleNamespace(model=model, tokenizer=tok, device=torch.device("cpu"))


@pytest.fixture
def sampled(monkeypatch):
    """Every prompt the sampler receives: ``[(prompt ids, n)]`` in call order."""
    seen = []
    real = dspy_lm.think_then_answer

    def recording(model, tok, fmt, prompt_ids, n=1, **kwargs):
        seen.extend((list(p), n) for p in prompt_ids)
        return real(model, tok, fmt, prompt_ids, n=n, **kwargs)

    monkeypatch.setattr(dspy_lm, "think_then_answer", recording)
    return seen


def test_calls_tokens_and_cache_hits_are_counted(lm, sampled):
    counters = Counters()
    client = PonderLM(lm, counters, max_tokens=5)
    ids = lm.tokenizer("3+4=", add_special_tokens=True)["input_ids"]
    first = client.forward(messages=[{"role": "user", "content": "3+4="}])
    generated = first.usage["completion_tokens"]
    assert sampled == [(ids, 1)]  # the prompt reached the sampler as these ids, once
    assert counters.calls == 1 and 1 <= generated <= 5
    assert counters.generated_tokens == generated
    assert counters.tokens == len(ids) + generated
    client.forward(messages=[{"role": "user", "content": "3+4="}])  # the same greedy request: free
    assert counters.calls == 1 and counters.cache_hits == 1 and len(sampled) == 1
    client.forward(messages=[{"role": "user", "content": "3+4="}], temperature=1.0, n=3)  # three samples: three calls
    assert counters.calls == 4 and sampled[-1] == (ids, 3)
    assert counters.tokens == 4 * len(ids) + counters.generated_tokens
    assert client.prompts == [ids] * 4


def test_chat_messages_go_through_the_chat_template(char_tokenizer):
    tok = copy.deepcopy(char_tokenizer)
    tok.chat_template = TEMPLATE
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "1+1="}]
    expected = tok("<system>sys\n<user>1+1=\n<assistant>", add_special_tokens=False)["input_ids"]
    assert message_ids(tok, messages) == expected


@pytest.mark.parametrize("chat_template", ["off", "on"])
def test_dspy_program_prompt_reaches_the_model_as_the_chain_ids(lm, sampled, chat_template):
    """The task program's prompt is the ids the planning environment sends for the same chain, in both framings."""
    lm.tokenizer = copy.deepcopy(lm.tokenizer)
    lm.tokenizer.chat_template = TEMPLATE  # so that the two framings differ
    counters = Counters()
    client = PonderLM(lm, counters, max_tokens=32)
    predict = dspy.Predict(dspy.Signature("question -> answer", "Add the numbers.\nAnswer at once."))
    predict.demos = [dspy.Example(question="2+2=", answer="4"), dspy.Example(question="1+5=", answer="6")]
    with dspy.context(lm=client, adapter=PlainAdapter(answer_tokens=4, chat_template=chat_template)):
        out = predict(question="3+4=")
    exemplars = ("2+2=4", "1+5=6")
    chain = Chain(instructions=("Add the numbers.", "Answer at once."), exemplars=exemplars, answer_format="direct")
    text = render_prompt(chain, "3+4=")
    assert plain_prompt("Add the numbers.\nAnswer at once.", predict.demos, "3+4=") == text
    fmt = ThoughtFormat.of(lm.model, lm.tokenizer, ThinkSettings(chat_template=chat_template))
    expected = fmt.prompt_ids(lm.tokenizer, [text])[0]
    assert (expected[:2] == lm.tokenizer("<u", add_special_tokens=False)["input_ids"]) == (chat_template == "on")
    assert sampled == [(expected, 1)]
    assert counters.calls == 1 and isinstance(out.answer, str) and "\n" not in out.answer


def test_single_output_without_markers_reads_the_text():
    adapter = PlainAdapter()
    sig = dspy.Signature("task_demos -> proposed_instruction")
    assert adapter.parse(sig, "  Add the two digits.\n") == {"proposed_instruction": "Add the two digits."}
    # A small proposer that writes another field's marker: the text before it (seen with SmolLM2 in MIPROv2).
    wrote = "Add them.\n\n[[ ## program_code ## ]]\ndef f(): pass"
    assert adapter.parse(sig, wrote) == {"proposed_instruction": "Add them."}
    with pytest.raises(dspy.utils.exceptions.AdapterParseError):
        adapter.parse(dspy.Signature("a -> b, c"), "no markers here")
    assert adapter.parse(dspy.Signature("question -> answer"), "\n 7\nmore") == {"answer": "7"}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bootstrap_rs", "mipro"])
def test_optimizer_calls_are_the_environment_calls(lm, sampled, method):
    from ponder.plan.dspy_program import DSPySettings, optimize

    env = PlanEnv(lm, get_task("add1"), n_train=4, n_heldout=3, seed=0)
    prog, summary = optimize(method, env, ["Think step by step."], DSPySettings(trials=2, candidates=2), seed=0)
    heldout = summary["heldout_calls"]
    assert heldout == 3  # one greedy answer per held-out problem, counted apart
    measured = len(env.train)  # the returned program's training accuracy, measured apart like the held-out one
    assert summary["calls"] == env.counters.calls == len(sampled) - heldout - measured  # every sampled row counted once
    assert sum(n for _, n in sampled) == len(sampled)  # (DSPy asked one sample per call here)
    assert summary["calls"] >= 4  # at least the start program on the training inputs
    assert env.counters.heldout_calls == heldout
    assert summary["curve"] == [
        {
            "calls": summary["calls"],
            "best_value": summary["best_train_accuracy"],
            "heldout_accuracy": summary["best_heldout_accuracy"],
        }
    ]


@pytest.mark.parametrize("method", ["bootstrap_rs", "mipro"])
def test_dspy_draws_demonstrations_apart_from_the_inputs_it_is_scored_on(lm, monkeypatch, method):
    """DSPy scores programs on the planners' evaluated inputs (valset) and draws demonstrations from other training
    problems (trainset), as the planners' vocabulary does: with valset=trainset a program holding an input's own
    demonstration scores it by copying."""
    from ponder.plan import dspy_program
    from ponder.plan.dspy_program import DSPySettings, optimize

    seen = {}

    class Recording:
        def __init__(self, *args, **kwargs):
            pass

        def compile(self, student, trainset, valset, **kwargs):
            seen.update(trainset=trainset, valset=valset)
            return student

    monkeypatch.setattr(
        dspy_program.dspy, "MIPROv2" if method == "mipro" else "BootstrapFewShotWithRandomSearch", Recording
    )
    env = PlanEnv(lm, get_task("add1"), n_train=4, n_heldout=2, seed=0)
    optimize(method, env, ["Think step by step."], DSPySettings(), seed=0)
    evaluated = {p.prompt for p in env.train}
    assert [e.question for e in seen["valset"]] == [p.prompt for p in env.train]
    demos = [e.question for e in seen["trainset"]]
    assert len(demos) == DSPySettings().demo_pool and not set(demos) & evaluated
    assert not set(demos) & {p.prompt for p in env.heldout}
