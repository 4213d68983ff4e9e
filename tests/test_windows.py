"""Documents of any length are read as token windows: same tokens, bounded memory, docs-per-step windows."""

from __future__ import annotations

import itertools
import os
import random
from types import SimpleNamespace

import pytest

from ponder.cli import main
from ponder.data.windows import document_windows, special_affixes
from ponder.train.next_token import document_token_windows


def _old_windows(tokenizer, text, window, answer_char):
    """Windows as they were cut before chunking: tokenize the whole text, then slice."""
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=answer_char is not None)
    ids, answer = enc["input_ids"], None
    if answer_char is not None:
        answer = next((i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s >= answer_char), None)
    out = []
    for start in range(0, len(ids), window):
        piece = ids[start : start + window]
        ans = None if answer is None or answer >= start + len(piece) else max(0, answer - start)
        out.append((piece, ans))
    return out


def test_chunked_windows_equal_whole_document_windows(char_tokenizer):
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(0, 300)
        text = "".join(rng.choice("ab c\n  d=") for _ in range(n))
        answer = rng.choice([None, rng.randint(0, n)])
        window = rng.randint(1, 40)
        chunk = rng.choice([5, 16, 33, 10**6])
        got = list(document_windows(char_tokenizer, text, window, answer, chunk_chars=chunk))
        assert got == _old_windows(char_tokenizer, text, window, answer), (text, answer, window, chunk)


def test_special_affixes_and_eos_only_at_the_end_of_a_document(char_tokenizer):
    tok = char_tokenizer
    assert special_affixes(tok) == ([tok.bos_token_id], [])
    ids = {c: tok.convert_tokens_to_ids(c) for c in "abcdefgxy"}
    bos, eos = tok.bos_token_id, tok.eos_token_id
    windows = list(document_token_windows(tok, iter(["abcdefg", "xy"]), 4))
    assert windows == [
        [bos, ids["a"], ids["b"], ids["c"]],
        [ids["d"], ids["e"], ids["f"], ids["g"]],
        [eos],
        [bos, ids["x"], ids["y"], eos],  # a document that fits: its tokens + EOS, as collated before windows
    ]


def test_rlp_step_draws_docs_per_step_windows_of_a_long_document(random_tiny, tmp_path, one_thread):
    from ponder.rl.rlp import RLPConfig, RLPTrainer

    model, tok = random_tiny
    cfg = RLPConfig(steps=1, docs_per_step=3, group_size=2, max_thought_tokens=2, context_length=16)
    source = SimpleNamespace(stream=lambda: itertools.repeat(("1+1=2 " * 10_000, None)))  # one endless document
    trainer = RLPTrainer(model, tok, source, cfg, tmp_path)
    docs, generators = trainer.recipe._next_docs(trainer)
    assert len(docs) == len(generators) == 3 and trainer.recipe.docs_consumed == 3
    assert [len(d.ids) for d in docs] == [16, 16, 16]


def _peak_rss_mib(argv: list[str]) -> float:
    """Peak resident memory (MiB) of the CLI run in a forked child (which starts at the parent's size)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            code = main(argv)
        finally:
            os._exit(code if isinstance(code, int) else 3)
    _, status, usage = os.wait4(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (argv[0], status)
    return usage.ru_maxrss / 1024


@pytest.mark.parametrize("job", ["rlp", "cpt"])
def test_a_10mb_single_line_document_costs_no_more_memory_than_a_short_one(job, tmp_path, tiny_hf_dir, one_thread):
    unit = "12+34=46 and 7+8=15; "
    peaks = {}
    for name, size in (("short", 2_000), ("long", 10_000_000)):
        corpus = tmp_path / f"{name}.txt"
        corpus.write_text(unit * (size // len(unit)))  # one line: a single document
        out = tmp_path / f"{job}-{name}"
        if job == "rlp":
            flags = ["--docs-per-step", "2", "--group-size", "2", "--max-thought-tokens", "4", "--context-length", "64"]
        else:
            flags = ["--batch-size", "2", "--max-length", "64"]
        argv = [job, "--model", str(tiny_hf_dir), "--corpus", str(corpus), "--steps", "1", *flags, "--out", str(out)]
        peaks[name] = _peak_rss_mib([*argv, "--quiet"])
    # The long corpus is held once as text (10 MB) and split into documents (a few copies); its step
    # tokenizes two 64-token windows. Before windows, RLP took every window of the document as a
    # document of the step (> 6 GiB) and CPT tokenized all of it (bench/RESULTS.md, Reliability).
    assert peaks["long"] - peaks["short"] < 80, peaks


@pytest.mark.slow
@pytest.mark.smollm
def test_chunks_equal_whole_tokenization_for_smollm2s_byte_level_bpe(smollm2_gguf):
    from pathlib import Path

    from transformers import AutoTokenizer

    gguf = smollm2_gguf
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    root = Path(__file__).resolve().parents[1]
    text = "\n\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "src/ponder").rglob("*.py"))[:30]])
    whole = [t for w, _ in document_windows(tok, text, 512, chunk_chars=10**9) for t in w]
    for chunk in (1000, 4096, 65536):
        assert [t for w, _ in document_windows(tok, text, 512, chunk_chars=chunk) for t in w] == whole
