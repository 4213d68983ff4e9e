"""``ponder corpus build``: the offline real-text corpus (see :mod:`ponder.data.realtext`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ponder.data.realtext import SOURCES, CorpusSettings, build_corpus, installed_roots


class CorpusJob(BaseModel):
    """Settings of ``ponder corpus build``."""

    model_config = ConfigDict(extra="forbid")
    out: str = Field("data/realtext", description="output folder (train.jsonl, heldout.jsonl, manifest.json)")
    sources: list[str] = Field(list(SOURCES), description=f"sources to read, of {', '.join(SOURCES)}")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="share of source units held out (by name hash)")
    max_chars: int = Field(2000, ge=1, description="longest document in characters (cut at paragraph boundaries)")
    min_chars: int = Field(200, ge=1, description="shorter documents are dropped")
    max_unit_chars: int = Field(20000, ge=1, description="prose kept per topic, README or module (its start)")
    site_packages: list[str] | None = Field(None, description="site-packages folders (unset: this Python's)")
    stdlib: str | None = Field(None, description="standard-library folder (unset: this Python's)")
    tokenizer: str | None = Field(
        None, description="a model (e.g. smollm2-135m) whose tokenizer counts the corpus's tokens (in the manifest)"
    )


def count_tokens(path: Path, tokenizer) -> int:
    """Tokens of every document of a jsonl corpus file (no special tokens)."""
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        return 0
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def run_corpus(job: CorpusJob) -> dict:
    site, stdlib, version = installed_roots()
    if job.site_packages is not None:
        site = [Path(p) for p in job.site_packages]
    if job.stdlib is not None:
        stdlib = Path(job.stdlib)
    settings = CorpusSettings(
        job.heldout_fraction, job.max_chars, job.min_chars, job.max_unit_chars, tuple(job.sources)
    )
    out = Path(job.out)
    manifest = build_corpus(out, site, stdlib, version, settings)
    if job.tokenizer:
        from ponder.models.lookup import load_model

        tok = load_model(job.tokenizer, device="cpu").tokenizer
        for split in manifest["splits"].values():
            split["tokens"] = {job.tokenizer: count_tokens(out / split["file"], tok)}
        # Token counts describe the output; the fingerprint covers inputs, settings and output hashes only.
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
