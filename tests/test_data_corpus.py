"""Reading corpora in every supported format, rendering tasks as documents, tokenizing."""

from __future__ import annotations

import json

import pytest

from ponder.data import (
    Addition,
    BigBenchTask,
    CorpusError,
    ListSort,
    iter_task_documents,
    read_documents,
    task_corpus,
    tokenize_documents,
)


def test_text_files_split_on_blank_lines_or_explicit_separators(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nstill first\n\n\nsecond doc\n  \nthird\n")
    assert read_documents(tmp_path / "a.txt") == ["first doc\nstill first", "second doc", "third"]
    (tmp_path / "b.md").write_text("story one\n\npara two<|endoftext|>\nstory two\n<|endoftext|>\n")
    assert read_documents(tmp_path / "b.md") == ["story one\n\npara two", "story two"]
    (tmp_path / "c.txt").write_text("page one\n\nmore\n\f\npage two")
    assert read_documents(tmp_path / "c.txt") == ["page one\n\nmore", "page two"]


def test_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "alpha", "id": 1}\n\n{"text": "beta\\ngamma"}\n{"body": "x", "text": "  "}\n')
    assert read_documents(path) == ["alpha", "beta\ngamma"]  # blank lines and blank documents skipped
    path.write_text('{"body": "one"}\n{"body": "two"}\n')
    assert read_documents(path, text_field="body") == ["one", "two"]


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"text": "ok"}\n{"text": "ok"}\n{"text": broken}\n', r"bad\.jsonl, line 3: not valid JSON"),
        ('{"text": "ok"}\n\n{"other": "x"}\n', r"bad\.jsonl, line 3: no 'text' field \(found 'other'\)"),
        ('["a list"]\n', r"line 1: no 'text' field"),
        ('{"text": 5}\n', r"line 1: field 'text' is int"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(CorpusError, match=match):
        read_documents(path)


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["one", None, "two", " "], "n": [1, 2, 3, 4]}), path)
    assert read_documents(path) == ["one", "two"]
    with pytest.raises(CorpusError, match=r"no column 'content' \(columns: text, n\)"):
        read_documents(path, text_field="content")


def test_saved_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["hf one", "hf two"], "label": [0, 1]})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert read_documents(tmp_path / "ds") == ["hf one", "hf two"]
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    assert read_documents(tmp_path / "dd") == ["hf one", "hf two"]
    with pytest.raises(CorpusError, match="no column 'body'"):
        read_documents(tmp_path / "ds", text_field="body")


def test_folder_of_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.md").write_text("ay\n\nay two")
    (tmp_path / "sub" / "c.jsonl").write_text('{"text": "sea"}\n')
    (tmp_path / "notes.csv").write_text("ignored")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("hidden")
    assert read_documents(tmp_path) == ["ay", "ay two", "bee", "sea"]


def test_corpus_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        read_documents(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="empty.txt is empty"):
        read_documents(tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_text("\n \n\n")
    with pytest.raises(CorpusError, match="no documents"):
        read_documents(tmp_path / "blank.txt")
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(CorpusError, match=r"unsupported file type '\.csv'.*\.txt, \.md, \.jsonl, \.parquet"):
        read_documents(tmp_path / "data.csv")
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9")
    with pytest.raises(CorpusError, match="not UTF-8"):
        read_documents(tmp_path / "latin.txt")
    (tmp_path / "sub").mkdir()
    with pytest.raises(CorpusError, match="holds no corpus files"):
        read_documents(tmp_path / "sub")
    assert issubclass(CorpusError, ValueError)


def test_task_corpus_renders_both_modes_reproducibly():
    task = Addition(4)
    docs = task_corpus(task, 200, seed=1)
    assert docs == task_corpus(task, 200, seed=1) and docs != task_corpus(task, 200, seed=2)
    problems = {p.prompt: p for p in task.problems(200, seed=1)}
    n_think = 0
    for doc in docs:
        prompt = doc.split("=")[0] + "="
        p = problems[prompt]
        assert doc in (prompt + p.answer, f"{prompt}<think>{p.thought}</think>{p.answer}")
        n_think += "<think>" in doc
    assert 60 < n_think < 140  # about half
    assert all("<think>" in d for d in task_corpus(task, 20, seed=0, think_fraction=1.0))
    assert not any("<think>" in d for d in task_corpus(task, 20, seed=0, think_fraction=0.0))
    with pytest.raises(ValueError, match="think_fraction"):
        task_corpus(task, 1, think_fraction=1.5)


def test_task_corpus_without_thoughts_and_fixed_sets(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "t", "examples": [{"input": f"q{i}", "target": f"a{i}"} for i in range(10)]}))
    task = BigBenchTask(path)
    docs = task_corpus(task, 25, seed=0, think_fraction=1.0)  # more than the file has: cycles
    assert len(docs) == 25 and not any("<think>" in d for d in docs)
    assert {d for d in docs} == {p.prompt + p.answer for p in task.split_problems("train")}


def test_iter_task_documents():
    gen = iter_task_documents(ListSort(3), seed=4, think_fraction=0.5)
    first = [next(gen) for _ in range(50)]
    again = iter_task_documents(ListSort(3), seed=4, think_fraction=0.5)
    assert first == [next(again) for _ in range(50)]
    assert any("<think>min" in d for d in first) and any("<think>" not in d for d in first)
    assert all(d.startswith("sort ") for d in first)


def test_tokenize_documents():
    from ponder.lm.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    ids = tokenize_documents(tok, ["ab", "1+2=<think>x</think>3", "abcdefghij"], max_length=6)
    a, b = tok.convert_tokens_to_ids(["a", "b"])
    assert ids[0] == [tok.bos_token_id, a, b, tok.eos_token_id]
    assert len(ids[1]) == 6 and ids[1][0] == tok.bos_token_id  # truncated: no eos
    full = tokenize_documents(tok, ["1+2=<think>x</think>3"], max_length=100)[0]
    assert tok.decode(full[1:-1]) == "1+2=<think>x</think>3" and len(full) == 1 + 4 + 1 + 1 + 1 + 1 + 1
    assert len(ids[2]) == 6 and ids[2][-1] != tok.eos_token_id
    assert tokenize_documents(tok, [], max_length=8) == []


def test_mid_answer_thoughts_resume_the_text():
    from ponder.data.corpus import iter_task_documents, render_problem
    from ponder.data.synthetic import Addition
    from ponder.lm.delimiters import strip_thoughts

    p = Addition(3).make(998, 154)
    assert render_problem(p, True, split_at=1) == "998+154=1<think>" + p.thought + "</think>152"
    docs = iter_task_documents(Addition(3, min_digits=2), seed=0, think_fraction=1.0, mid_answer_thoughts=1.0)
    for _ in range(50):
        doc = next(docs)
        prompt, rest = doc.split("=", 1)
        a, b = map(int, prompt.split("+"))
        assert strip_thoughts(rest) == str(a + b)  # removing the thought leaves the plain answer
        assert not rest.startswith("<think>")  # the thought is inside the answer, never before it


def test_pause_thoughts_sit_anywhere_but_the_answer_start():
    import random

    from ponder.data.corpus import PAUSE_THOUGHT, iter_task_documents, pause_offset, render_problem
    from ponder.data.synthetic import Addition
    from ponder.lm.delimiters import strip_thoughts

    p = Addition(3).make(998, 154)  # "998+154=" + "1152"
    pause = "<think>" + PAUSE_THOUGHT + "</think>"
    assert render_problem(p, False, pause_at=3) == "998" + pause + "+154=1152"
    assert render_problem(p, False, pause_at=12) == "998+154=1152" + pause  # after the last character
    # with a scratchpad before the answer, a pause inside the answer goes after the scratchpad
    assert render_problem(p, True, pause_at=10) == "998+154=<think>" + p.thought + "</think>11" + pause + "52"
    with pytest.raises(ValueError, match="answer start"):
        render_problem(p, False, pause_at=len(p.prompt))
    with pytest.raises(ValueError):
        render_problem(p, False, pause_at=0)
    rng = random.Random(0)
    offsets = {pause_offset(p, rng) for _ in range(500)}
    assert offsets == set(range(1, 13)) - {len(p.prompt)}  # every boundary but the start and the answer start
    docs = iter_task_documents(Addition(3, min_digits=2), seed=0, think_fraction=0.5, pause_thoughts=1.0)
    for _ in range(50):
        doc = next(docs)
        assert doc.count(pause) == 1 and "=" + pause not in doc
        prompt, rest = strip_thoughts(doc).split("=")
        a, b = map(int, prompt.split("+"))
        assert rest == str(a + b)


def test_pauses_leave_the_rest_of_the_stream_unchanged():
    import itertools

    from ponder.data.corpus import iter_task_documents
    from ponder.data.synthetic import Addition
    from ponder.lm.delimiters import strip_thoughts

    task = Addition(3, min_digits=2)
    plain = list(itertools.islice(iter_task_documents(task, seed=1, think_fraction=0.5), 40))
    paused = list(itertools.islice(iter_task_documents(task, seed=1, think_fraction=0.5, pause_thoughts=0.5), 40))
    assert [strip_thoughts(d) for d in plain] == [strip_thoughts(d) for d in paused]
    assert 5 < sum(a != b for a, b in zip(plain, paused)) < 35  # about half the documents got a pause


def test_lazy_thoughts_replace_the_scratchpad_with_a_pause():
    import itertools

    from ponder.data.corpus import PAUSE_THOUGHT, iter_task_documents, render_problem
    from ponder.data.synthetic import Addition

    p = Addition(3).make(998, 154)
    assert render_problem(p, True, lazy=True) == "998+154=<think>" + PAUSE_THOUGHT + "</think>1152"
    assert render_problem(p, False, lazy=True) == "998+154=1152"  # no thought, nothing to make lazy
    task = Addition(3, min_digits=2)
    plain = list(itertools.islice(iter_task_documents(task, seed=2, think_fraction=0.5), 200))
    lazy = list(itertools.islice(iter_task_documents(task, seed=2, think_fraction=0.5, lazy_thoughts=0.6), 200))
    changed = [(a, b) for a, b in zip(plain, lazy) if a != b]
    # only scratchpad documents change, and each becomes the same problem with a pause thought
    for a, b in changed:
        assert (
            "<think>" in a
            and b == a.split("<think>")[0] + "<think>" + PAUSE_THOUGHT + "</think>" + a.split("</think>")[1]
        )
    thinking = sum("<think>" in a for a in plain)
    assert 0.45 * thinking < len(changed) < 0.75 * thinking
    with pytest.raises(ValueError, match="lazy_thoughts"):
        next(iter_task_documents(task, lazy_thoughts=1.5))
