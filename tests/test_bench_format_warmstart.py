"""bench/format_warmstart.py's --train delimiters: only the delimiters' embedding rows move."""

from types import SimpleNamespace

import pytest
import torch

from bench_scripts import load_bench


def _two_adamw_steps(model) -> None:
    """Two AdamW steps (lr 1e-2) of next-token loss on one sequence that reads ids 5 and 7."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    ids = torch.tensor([[3, 5, 9, 7, 11, 12, 5, 7]])
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()


def test_train_delimiters_only_moves_the_two_rows_and_nothing_else(tiny_hf_dir):
    from transformers import AutoModelForCausalLM

    bench = load_bench("format_warmstart")
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fmt = SimpleNamespace(open_id=5, close_id=7)
    bench.train_delimiters_only(model, fmt)
    _two_adamw_steps(model)
    emb = model.get_input_embeddings().weight
    moved = (emb.detach() != before[next(n for n, p in model.named_parameters() if p is emb)]).any(1)
    assert moved.nonzero().flatten().tolist() == [5, 7]
    for name, p in model.named_parameters():
        if p is not emb and p is not model.get_output_embeddings().weight:
            assert torch.equal(p.detach(), before[name]), name
    out = model.get_output_embeddings().weight
    if out is not emb:  # untied: its rows likewise
        assert (out.detach() != before[next(n for n, p in model.named_parameters() if p is out)]).any(
            1
        ).nonzero().flatten().tolist() == [5, 7]


def test_delimiter_rows_and_lora_train_together_and_nothing_else_of_the_base(tiny_hf_dir):
    from transformers import AutoModelForCausalLM

    from ponder.train.engine import prepare_model
    from ponder.train.next_token import NextTokenConfig

    bench = load_bench("format_warmstart")
    model = prepare_model(
        AutoModelForCausalLM.from_pretrained(tiny_hf_dir), NextTokenConfig(steps=1, lora_rank=2, report_to=["none"])
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    bench.train_delimiters_only(model, SimpleNamespace(open_id=5, close_id=7), freeze_rest=False)
    _two_adamw_steps(model)
    emb = model.get_input_embeddings().weight
    tables = {id(emb), id(model.get_output_embeddings().weight)}
    for name, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        if id(p) in tables:
            assert (p.detach() != before[name]).any(1).nonzero().flatten().tolist() == [5, 7], name
        elif "lora_B" in name:
            assert changed, name  # the adapters learn beside the rows
        elif "lora_" not in name:
            assert not changed, name  # the base's own weights stay frozen


def test_thought_loss_needs_closing_examples(capsys):
    bench = load_bench("format_warmstart")
    with pytest.raises(SystemExit) as stop:
        bench.main(["--corpus", "c", "--out", "o", "--form", "inserted", "--thought-loss"])
    assert stop.value.code == 2
    assert "--form closing" in capsys.readouterr().err
