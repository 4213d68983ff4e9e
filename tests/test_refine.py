"""Student-filtered refinements: the filter rules against hand-made loss tables."""

import itertools
import json
import math

import pytest
import torch

from ponder.data.refine import (
    RefineFilter,
    keep_mask,
    loss_band_mask,
    quantile_mask,
    response_losses,
    select_responses,
)

ORIGINAL = torch.tensor([1.0, 1.0, 2.0, 0.5, 3.0])
REFINED = torch.tensor([0.5, 1.2, 2.0, 1.5, 0.1])  # differences: -0.5, +0.2, 0, +1.0, -2.9


def _list(mask):
    return mask.tolist()


def test_loss_band_absolute():
    assert _list(loss_band_mask(ORIGINAL, REFINED, upper=0.0)) == [True, False, True, False, True]
    assert _list(loss_band_mask(ORIGINAL, REFINED, upper=0.25)) == [True, True, True, False, True]
    # two-sided: a refinement far easier than the original (-2.9) is out of a band of +-1
    assert _list(loss_band_mask(ORIGINAL, REFINED, upper=1.0, lower=-1.0)) == [True, True, True, True, False]
    with pytest.raises(ValueError, match="empty band"):
        loss_band_mask(ORIGINAL, REFINED, upper=-1.0, lower=0.0)


def test_loss_band_relative():
    # relative changes: -0.5, +0.2, 0, +2.0, -0.9667
    assert _list(loss_band_mask(ORIGINAL, REFINED, upper=0.25, relative=True)) == [True, True, True, False, True]
    assert _list(loss_band_mask(ORIGINAL, REFINED, upper=0.1, lower=-0.6, relative=True)) == [
        True,
        False,
        True,
        False,
        False,
    ]
    zero = torch.tensor([0.0, 0.0])
    assert _list(loss_band_mask(zero, torch.tensor([0.0, 0.3]), upper=5.0, relative=True)) == [True, False]


def test_quantile_rank_within_own_distribution():
    losses = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.5])
    # quantile(., 0.5) of 5 values is the middle one, 0.3: keep the three lowest
    assert _list(quantile_mask(losses, 0.5)) == [False, True, True, True, False]
    # 0.75 -> 0.4 (index 3 of the sorted 5 at linear interpolation position 3.0)
    assert _list(quantile_mask(losses, 0.75)) == [True, True, True, True, False]
    # interpolated threshold between 0.2 and 0.3 (position 1.6 -> 0.26)
    assert _list(quantile_mask(losses, 0.4)) == [False, True, False, True, False]
    assert _list(quantile_mask(losses, 0.0)) == [False, True, False, False, False]
    assert _list(quantile_mask(losses, 1.0)) == [True] * 5
    ties = torch.tensor([0.2, 0.2, 0.2, 0.9])
    assert _list(quantile_mask(ties, 0.5)) == [True, True, True, False]  # ties at the threshold all kept
    with pytest.raises(ValueError):
        quantile_mask(losses, 1.5)


def test_quantile_against_the_original_distribution():
    # originals' median is 1.0: keep refinements the student finds no harder than a typical original
    assert _list(quantile_mask(REFINED, 0.5, reference=ORIGINAL)) == [True, False, False, False, True]


def test_keep_mask_dispatch_and_selection():
    assert _list(keep_mask(RefineFilter(rule="all"), ORIGINAL, REFINED)) == [True] * 5
    assert _list(keep_mask(RefineFilter(rule="none"), ORIGINAL, REFINED)) == [False] * 5
    band = keep_mask(RefineFilter(rule="loss_band", upper=0.0), ORIGINAL, REFINED)
    assert _list(band) == [True, False, True, False, True]
    quant = keep_mask(RefineFilter(rule="quantile", q=0.5), ORIGINAL, REFINED)
    assert _list(quant) == _list(quantile_mask(REFINED, 0.5))
    quant_orig = keep_mask(RefineFilter(rule="quantile", q=0.5, reference="original"), ORIGINAL, REFINED)
    assert _list(quant_orig) == [True, False, False, False, True]
    # the gap refined - original is -0.5, +0.2, 0, +1.0, -2.9: its median is 0, so three are kept
    quant_gap = keep_mask(RefineFilter(rule="quantile", q=0.5, statistic="gap"), ORIGINAL, REFINED)
    assert _list(quant_gap) == [True, False, True, False, True]
    originals, refined = ["a", "b", "c", "d", "e"], ["A", "B", "C", "D", "E"]
    assert select_responses(originals, refined, band) == ["A", "b", "C", "d", "E"]
    assert select_responses(originals, refined, band, fallback="drop") == ["A", None, "C", None, "E"]
    with pytest.raises(ValueError, match="fallback"):
        select_responses(originals, refined, band, fallback="skip")
    with pytest.raises(ValueError, match="decisions"):
        select_responses(originals, refined[:4], band)
    with pytest.raises(ValueError, match="equal length"):
        keep_mask(RefineFilter(), ORIGINAL, REFINED[:3])


def test_filter_config_validation():
    assert RefineFilter().lower == -math.inf
    with pytest.raises(ValueError):
        RefineFilter(rule="median")
    with pytest.raises(ValueError):
        RefineFilter(q=2.0)
    with pytest.raises(ValueError, match="empty band"):
        RefineFilter(upper=-1.0, lower=0.0)
    with pytest.raises(ValueError, match="statistic 'refined'"):
        RefineFilter(rule="quantile", statistic="gap", reference="original")


def test_response_losses_is_the_mean_token_nll(random_tiny):
    model, tok = random_tiny
    prompts, responses = ["12+3=", "7+8="], ["15", "<think>7+8+0=15</think>15"]
    losses = response_losses(model, tok, prompts, responses)
    for prompt, response, loss in zip(prompts, responses, losses):
        p_ids = tok(prompt)["input_ids"]
        r_ids = tok(response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + r_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        targets = ids[0, 1:]
        token_nll = -logp[torch.arange(len(targets)), targets][len(p_ids) - 1 :]
        assert len(token_nll) == len(r_ids)
        torch.testing.assert_close(loss, token_nll.mean(), atol=1e-4, rtol=1e-4)


def test_seed_summary_cells_and_markdown_table():
    from ponder.report.tables import markdown_table, seed_cells, seed_summary

    s = seed_summary([0.5, 0.25, 0.75])
    assert s["mean"] == 0.5 and s["per_seed"] == [0.5, 0.25, 0.75]
    assert s["std"] == pytest.approx(0.25)  # sample std: sqrt((0 + 0.0625 + 0.0625) / 2)
    assert seed_summary([0.4])["std"] == 0.0
    assert seed_cells(s) == "0.500 | 0.250 | 0.500 0.250 0.750"
    table = markdown_table(["set", "acc", "std", "per seed"], [["all", seed_cells(s)]])
    assert table.splitlines() == [
        "| set | acc | std | per seed |",
        "| --- | --- | --- | --- |",
        f"| all | {seed_cells(s)} |",
    ]


def test_refinement_table_and_training_on_a_selection(trained_tiny_dir, tmp_path, one_thread, monkeypatch):
    from ponder.data.registry import get_task
    from ponder.jobs import refine
    from ponder.train.next_token import NextTokenConfig

    job = refine.RefineJob(
        task="add2",
        teacher=str(trained_tiny_dir),
        student=str(trained_tiny_dir),
        n_train=12,
        eval_n=4,
        train=NextTokenConfig(steps=2, batch_size=4, lr=1e-4, warmup_steps=0, save_every=2, max_length=64),
    )
    table = refine.build_table(job)
    tok = refine.load_model(str(trained_tiny_dir)).tokenizer
    open_id, close_id = tok.convert_tokens_to_ids(["<think>", "</think>"])
    problems = get_task("add2").problems(12)
    assert table.prompts == [p.prompt for p in problems] and table.originals == [p.answer for p in problems]
    assert table.prompt_ids == [tok(p.prompt)["input_ids"] for p in problems]
    assert table.original_ids == [tok(p.answer, add_special_tokens=False)["input_ids"] for p in problems]
    assert len(table.refined_ids) == 12 and table.loss_refined.shape == (12,)
    for ids, text in zip(table.refined_ids, table.refined):
        assert ids[0] == open_id and close_id in ids and tok.eos_token_id not in ids  # training adds its own EOS
        assert tok.decode(ids, clean_up_tokenization_spaces=False) == text  # the text is only for reading / scoring
    assert torch.all(table.loss_original > 0) and torch.all(torch.isfinite(table.loss_refined))
    assert set(table.teacher_correct.tolist()) <= {0.0, 1.0}

    seen = []
    real = refine.train_next_token

    def spy(model, tokenizer, documents, **kw):
        seen.append(list(itertools.islice(documents(), 12)))
        return real(model, tokenizer, documents, **kw)

    monkeypatch.setattr(refine, "train_next_token", spy)
    keep = torch.tensor([True, False] * 6)
    summary = refine.train_on_selection(job, table, keep, tmp_path / "student")
    assert summary["steps"] == 2 and summary["kept"] == 6 and summary["documents"] == 12
    expected = [
        p + (r if k else o) for p, o, r, k in zip(table.prompt_ids, table.original_ids, table.refined_ids, keep)
    ]
    assert sorted(seen[0]) == sorted(expected)  # one epoch, shuffled
    dropped = refine.train_on_selection(job, table, keep, tmp_path / "student-drop", fallback="drop")
    assert dropped["documents"] == 6 and dropped["kept"] == 6
    assert sorted(seen[1][:6]) == sorted(e for e, k in zip(expected, keep) if k)
    assert summary["kept_wrong"] == int(((table.teacher_correct < 1) & keep).sum())
    assert 0 <= summary["eval"]["think"]["accuracy"] <= 1


def test_run_refine_writes_table_and_summary(trained_tiny_dir, tmp_path, one_thread):
    from ponder.jobs.refine import RefineJob, run_refine
    from ponder.train.next_token import NextTokenConfig

    job = RefineJob(
        task="add2",
        teacher=str(trained_tiny_dir),
        student=str(trained_tiny_dir),
        n_train=8,
        eval_n=4,
        filter=RefineFilter(rule="quantile", q=0.5),
        out=str(tmp_path / "run"),
        train=NextTokenConfig(steps=1, batch_size=4, lr=1e-4, warmup_steps=0, save_every=1, max_length=64),
    )
    summary = run_refine(job, progress=False)
    table = json.loads((tmp_path / "run" / "refinement_table.json").read_text())
    assert len(table["refined"]) == len(table["loss_refined"]) == 8
    assert summary["kept"] == sum(x <= sorted(table["loss_refined"])[3] + 1e-6 for x in table["loss_refined"])
    assert json.loads((tmp_path / "run" / "refine_summary.json").read_text())["kept"] == summary["kept"]


def test_teacher_batches_split_the_prompts_across_ranks_in_whole_decode_batches():
    from ponder.jobs.refine import teacher_batches

    # 7 prompts in batches of 3: [0, 3) [3, 6) [6, 7); batch b on rank b % world.
    assert teacher_batches(7, 3) == [(0, range(0, 3)), (1, range(3, 6)), (2, range(6, 7))]
    assert teacher_batches(7, 3, rank=0, world=2) == [(0, range(0, 3)), (2, range(6, 7))]
    assert teacher_batches(7, 3, rank=1, world=2) == [(1, range(3, 6))]
    assert teacher_batches(2, 3, rank=1, world=2) == []  # a rank may have nothing to sample
    for n, size, world in [(7, 3, 2), (10, 4, 3), (5, 1, 4), (0, 2, 2)]:
        rows = [i for r in range(world) for _, batch in teacher_batches(n, size, r, world) for i in batch]
        assert sorted(rows) == list(range(n))  # every prompt once, on one rank


def test_sampled_refinements_depend_on_the_seed_and_batch_not_on_the_rank_count(tiny_hf_dir, one_thread):
    """At a temperature, each decode batch draws from its own (seed, batch) generator: the refinements of
    one rank's batches are those of the same batches in one process."""
    from ponder.data.registry import get_task
    from ponder.jobs import refine
    from ponder.lm.thinking import ThoughtFormat

    lm = refine.load_model(str(tiny_hf_dir))
    fmt = ThoughtFormat.of(lm.model, lm.tokenizer)
    task = get_task("add2")
    prompts = fmt.prompt_ids(lm.tokenizer, [p.prompt for p in task.problems(5, seed=0)])

    def refined(seed, subset=None):
        ids, _ = refine.teacher_refinements(lm.model, lm.tokenizer, fmt, task, prompts, 1.0, seed, batch_size=2)
        return ids

    whole = refined(0)
    assert whole == refined(0)  # reproducible
    assert whole != refined(1)  # the seed matters (a random tiny model at T = 1: different draws)
    # Rank 1 of 2 samples batch 1 (prompts 2, 3) alone: the same ids as in the whole run.
    ids = {}
    for b, rows in refine.teacher_batches(len(prompts), 2, rank=1, world=2):
        gen = refine._batch_generator(lm.model, 0, b)
        done = refine.think_then_answer(
            lm.model, lm.tokenizer, fmt, [prompts[i] for i in rows], think=True, temperature=1.0, generator=gen,
            max_thought_tokens=refine.thought_budget(task), max_answer_tokens=16, batch_size=2,
        )  # fmt: skip
        ids.update(zip(rows, refine.refinement_ids(done, fmt.eos_ids)))
    assert ids == {2: whole[2], 3: whole[3]}
