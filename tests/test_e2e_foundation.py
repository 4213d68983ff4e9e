"""End to end: base training, eval through the CLI on synthetic, BIG-bench and reasoning-gym tasks."""

import json

import pytest
import torch

from ponder.cli import main


def test_char_tokenizer_round_trip(tmp_path, char_tokenizer):
    from transformers import AutoTokenizer

    text = "1234+5678=<think>4+8+0=12</think>6912\nsort 3,1=1,3"
    ids = char_tokenizer(text)["input_ids"]
    assert ids[0] == char_tokenizer.bos_token_id and ids.count(char_tokenizer.convert_tokens_to_ids("<think>")) == 1
    char_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == ids
    assert loaded.decode(ids[1:]) == text
    assert len(loaded) == len(char_tokenizer)


def test_base_cli_writes_hf_model_and_accuracies(tmp_path, capsys):
    cfg = tmp_path / "base.yaml"
    cfg.write_text(
        "task: add2\neval_n: 8\n"
        "arch: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}\n"
        "train: {steps: 6, batch_size: 8, warmup_steps: 2, save_every: 3}\n"
    )
    out = tmp_path / "run"
    assert main(["base", "--config", str(cfg), "--out", str(out), "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["steps"] == 6
    assert set(summary["eval"]) >= {"think", "no_think"}
    assert 0 <= summary["eval"]["think"]["accuracy"] <= 1
    assert (out / "final" / "config.json").is_file() and (out / "checkpoints" / "latest").is_file()
    assert "think" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_cli_json_keys_and_modes(trained_tiny_dir, tmp_path):
    path = tmp_path / "e.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(trained_tiny_dir),
                "--task",
                "add2",
                "--n",
                "12",
                "--k",
                "3",
                "--json",
                str(path),
                "--quiet",
            ]
        )
        == 0
    )
    data = json.loads(path.read_text())
    assert data["model"] == str(trained_tiny_dir) and data["task"] == "add2" and data["n"] == 12
    assert set(data["think"]) >= {"accuracy", "mean_thought_tokens", "pass@3", "maj@3"}
    assert "accuracy" in data["no_think"]
    assert data["think"]["mean_thought_tokens"] > 0
    # pass@k counts any correct sample, so it is never below... the greedy run is a different draw;
    # both are proportions of 12 problems.
    for v in (data["think"]["accuracy"], data["think"]["pass@3"], data["no_think"]["accuracy"]):
        assert 0 <= v <= 1 and abs(v * 12 - round(v * 12)) < 1e-9


@pytest.mark.slow
def test_no_think_mode_never_emits_a_delimiter(trained_tiny_dir):
    from ponder.data.registry import get_task
    from ponder.lm.thinking import ThoughtFormat, think_then_answer
    from ponder.models.lookup import load_model

    lm = load_model(str(trained_tiny_dir), device="cpu")
    fmt = ThoughtFormat.of(lm.model, lm.tokenizer)
    prompts = fmt.prompt_ids(lm.tokenizer, [p.prompt for p in get_task("add2").problems(16, seed=3, split="test")])
    out = think_then_answer(
        lm.model,
        lm.tokenizer,
        fmt,
        prompts,
        think=False,
        n=4,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.thoughts is None
    assert not any({fmt.open_id, fmt.close_id} & set(ids) for ids in out.answer_ids)
    assert not any("<think>" in t or "</think>" in t for t in out.texts(lm.tokenizer))


@pytest.mark.slow
def test_bigbench_file_end_to_end(trained_tiny_dir, tmp_path):
    task = {
        "name": "tiny_sums",
        "examples": [{"input": f"{a}+{b}=", "target": str(a + b)} for a in range(10, 20) for b in range(10, 14)],
    }
    path = tmp_path / "task.json"
    path.write_text(json.dumps(task))
    out = tmp_path / "bb.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(trained_tiny_dir),
                "--task",
                str(path),
                "--n",
                "4",
                "--mode",
                "no_think",
                "--json",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["n"] == 4 and "think" not in data and 0 <= data["no_think"]["accuracy"] <= 1


@pytest.mark.slow
def test_reasoning_gym_dataset_end_to_end(trained_tiny_dir, tmp_path):
    pytest.importorskip("reasoning_gym")
    out = tmp_path / "rg.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(trained_tiny_dir),
                "--task",
                "rg:basic_arithmetic",
                "--n",
                "3",
                "--max-thought-tokens",
                "8",
                "--max-answer-tokens",
                "8",
                "--json",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["task"].startswith("rg:") or "basic_arithmetic" in data["task"]
    assert data["n"] == 3 and data["think"]["mean_thought_tokens"] <= 8


@pytest.mark.slow
@pytest.mark.smollm
def test_smollm2_loads_from_wheel_and_scores_a_sentence(smollm2_gguf):
    from ponder.lm.delimiters import think_token_ids
    from ponder.models.lookup import load_model

    lm = load_model("smollm2-135m", device="cpu")
    open_id, close_id = think_token_ids(lm.tokenizer)
    assert lm.model.get_input_embeddings().weight.shape[0] >= close_id + 1
    scores = lm.score(["The capital of France is"] * 2, [" Paris", " banana"])
    assert torch.isfinite(scores.sum).all()
    assert scores.sum[0] > scores.sum[1] + 2.0  # Paris is far likelier than banana
    out = lm.sample(["The capital of France is"], max_new_tokens=3, temperature=0)
    assert "Paris" in out.texts(lm.tokenizer)[0]


@pytest.mark.slow
@pytest.mark.smollm
def test_gguf_model_saves_as_a_plain_hf_checkpoint(tmp_path, smollm2_gguf):
    """A GGUF model is de-quantized on load, so it must checkpoint and reload as an ordinary HF model."""
    from transformers import AutoModelForCausalLM

    from ponder.models.lookup import load_model

    lm = load_model("smollm2-135m", device="cpu")
    lm.save(tmp_path / "ckpt")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    name, weight = next(iter(lm.model.state_dict().items()))
    torch.testing.assert_close(reloaded.state_dict()[name], weight)
