"""What verified checkpoints cost: one RLP-shaped checkpoint (model, EMA, AdamW state) of a SmolLM2-135M-shaped
model, written the plain way and ponder's way, and verified on resume, side by side in one run.

    plain   : save_pretrained (model, EMA) + torch.save of the trainer state, no fsync (what ponder did before)
    ponder  : save_checkpoint: the same files with the state as JSON + safetensors, a sha256 manifest,
              fsync of every file, one rename
    verify  : latest_checkpoint: every file re-read and hashed against the manifest (each resume)

    OMP_NUM_THREADS=1 python bench/checkpoint_cost.py            # random weights, nothing downloaded
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def build(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--intermediate", type=int, default=1536)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args()
    from ponder.train.checkpoint import latest_checkpoint, save_checkpoint

    model = build(args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate, args.vocab)
    ema = build(args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate, args.vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model(torch.ones(1, 8, dtype=torch.long)).logits.float().mean().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "docs_consumed": 0}
    params = sum(p.numel() for p in model.parameters()) / 1e6
    root = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        t0 = time.perf_counter()
        plain = root / "plain"
        model.save_pretrained(plain)
        ema.save_pretrained(plain / "ema")
        torch.save(state, plain / "trainer_state.pt")  # no fsync: what ponder did before
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        ckpt = save_checkpoint(root / "run", 1, model, None, state, extra_models={"ema": ema})
        t_ponder = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert latest_checkpoint(root / "run") == ckpt
        t_verify = time.perf_counter() - t0
        print(f"model: {params:.1f}M parameters (hidden {args.hidden}, {args.layers} layers)")
        print("| write | MB | seconds |\n| --- | --- | --- |")
        print(f"| plain (save_pretrained + torch.save, no fsync) | {size_mb(plain):.0f} | {t_plain:.2f} |")
        print(f"| ponder save_checkpoint (JSON + safetensors state, sha256 manifest, fsync) | {size_mb(ckpt):.0f} | {t_ponder:.2f} |")  # fmt: skip
        print(f"| ponder resume verification (re-read and hash every file) | {size_mb(ckpt):.0f} | {t_verify:.2f} |")
        print(f"ponder / plain write: x{t_ponder / t_plain:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
