"""Peak memory of one training step, configurations side by side in one run.

Random-init models of real shapes (``lm/shapes.py``: the real width and vocabulary, reduced depth)
and synthetic token batches, so every row does the same work as its neighbours:

* ``score``: the scoring pass of a GRPO batch (``B`` completions), forward and backward (the output
  layer frozen: the gradient of a 151,936 x 1,024 embedding would be most of the figure):
  ponder's :class:`~ponder.lm.logprobs.TokenScorer` (hidden states, the output layer in
  checkpointed chunks at the scored tokens) vs the model's whole ``[B, T, V]`` logits
  (``logprobs_from_logits``); at vocabularies 151,936 (Qwen3) and 49,152 (SmolLM2);
* ``grpo``: one engine update (clipped surrogate, backward, AdamW) of the same batch, whole and
  in micro-batches, with and without gradient checkpointing; and TRL's ``GRPOTrainer`` loss
  (``compute_loss``, backward, AdamW) on the same completions;
* ``rlp``: one whole RLP step (sampling, EMA baseline, reward pass, update) of ``ponder rlp``'s
  trainer on text windows, whole and in micro-batches of one position; in micro-batches also with a
  bf16 EMA teacher (``--ema-dtype bf16``) and with LoRA adapters of rank 8 (when peft is installed)
  in place of full fine-tuning. These rows also give the state a trainer holds between steps
  (weights, optimizer state, EMA teacher), counted from its tensors.

Each row's figure is the step's peak over the memory held before it (model, optimizer state
and, for RLP, the EMA teacher already allocated by a warm-up step): on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the process's peak resident set (``VmHWM``, reset
through ``/proc/self/clear_refs``, with glibc returning every large block at free), so the rows
run one after another in one process. Ratios: ``chunked_over_unchunked`` (scoring at vocabulary
151,936) and ``ponder_over_trl`` (ponder's GRPO update in micro-batches of one completion over TRL's on
the same completions; ``ponder_over_trl_one_batch`` without micro-batches); ``rlp_lora_over_full``
(the LoRA RLP step's peak over full fine-tuning's) and ``rlp_lora_state_over_full`` (the same for the
held state)::

    OMP_NUM_THREADS=1 python bench/memory.py [--quick] [--json PATH] [--device cuda --dtype bf16]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from ponder.lm import hf_compat, logprobs  # noqa: E402
from ponder.lm.logprobs import logprobs_from_logits  # noqa: E402
from ponder.models.lookup import load_model  # noqa: E402
from ponder.rl.batches import PaddedBatch  # noqa: E402
from ponder.train.engine import Engine, EngineSettings, Recipe, StepBatch  # noqa: E402

QWEN, SMOL = "qwen3-0.6b-shape", "smollm2-135m-shape"
LORA_RANK = 8  # the LoRA row's adapter rank (peft's default targets: every linear layer but the output layer)
GRIDS = {
    # layers, completions B, prompt and completion tokens, RLP documents per step
    "full": dict(
        layers=2,
        completions=8,
        prompt=32,
        completion=160,
        rlp_docs=4,
        vocabs=(QWEN,),
        grpo=((None, False), (1, False), (None, True)),
    ),
    "quick": dict(
        layers=1, completions=4, prompt=16, completion=48, rlp_docs=2, vocabs=(SMOL,), grpo=((None, False), (1, False))
    ),
}


class PeakMemory:
    """The peak of memory allocated between :meth:`start` and :meth:`stop`, over what was held at the start."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0
        if device.type == "cpu":
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: blocks over 64 KiB are mapped, unmapped at free

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key} in /proc/self/status")

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.libc.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
            self.base = self._status("VmRSS")

    def stop(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return self._status("VmHWM") - self.base


def completions_batch(vocab: int, num: int, prompt: int, completion: int, device, seed: int = 0) -> PaddedBatch:
    """``num`` rows of ``prompt + completion`` random tokens; the completion tokens are the actions."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (num, prompt + completion), generator=gen)
    loss = torch.zeros(ids.shape, dtype=torch.bool)
    loss[:, prompt:] = True
    tensors = (ids, torch.ones_like(ids), loss, torch.zeros_like(loss), torch.zeros(ids.shape))
    return PaddedBatch(*(x.to(device) for x in tensors))


def advantages_for(batch: PaddedBatch) -> torch.Tensor:
    return torch.linspace(-1, 1, len(batch))


class FixedBatch(Recipe):
    """A recipe whose every step is the same batch: the engine's update alone, no sampling."""

    name = "fixed"

    def __init__(self, batch: PaddedBatch, settings: EngineSettings):
        super().__init__()
        self.batch, self.settings = batch, settings

    def make_step(self, engine):
        return StepBatch(self.batch, advantages_for(self.batch), reduce="token")


def set_checkpointing(model, on: bool) -> None:
    if on:  # a fresh copy has it off
        hf_compat.enable_activation_checkpointing(model)


# ---------------------------------------------------------------- the steps measured


def score_step(model, batch: PaddedBatch, chunked: bool) -> None:
    """Forward and backward of the completion tokens' log-probs and entropies (no optimizer)."""
    model.zero_grad(set_to_none=True)
    if chunked:
        logp, ent = batch.scores(model)
    else:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logp, ent = logprobs_from_logits(logits[:, :-1], batch.input_ids[:, 1:], return_entropy=True)
        mask = batch.loss_mask[:, 1:]
        logp, ent = logp * mask, ent * mask
    (-(logp.sum() + 0.01 * ent.sum()) / batch.loss_mask.sum()).backward()


def ponder_engine(model, tok, batch: PaddedBatch, micro: int | None, run_dir: Path) -> Engine:
    settings = EngineSettings(micro_batch=micro, lr=1e-6, report_to=["none"])
    return Engine(model, tok, FixedBatch(batch, settings), run_dir)


def trl_trainer(model, tok, batch: PaddedBatch, out: Path):
    """TRL's GRPOTrainer on ``model`` (its loss only is run; no generation)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=len(batch),
        num_generations=len(batch),
        max_completion_length=int(batch.loss_mask.sum(1).max()),
        learning_rate=1e-6,
        report_to="none",
        use_cpu=batch.input_ids.device.type == "cpu",
        bf16=next(model.parameters()).dtype == torch.bfloat16,
        save_strategy="no",
        disable_tqdm=True,
        loss_type="dapo",
    )
    data = Dataset.from_dict({"prompt": ["a"] * len(batch)})
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=args,
        train_dataset=data,
        processing_class=tok,
    )
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def trl_inputs(batch: PaddedBatch) -> dict:
    prompt = int((~batch.loss_mask[0]).sum())
    ids, mask = batch.input_ids, batch.attention_mask
    completion_mask = mask[:, prompt:]
    return {
        "prompt_ids": ids[:, :prompt],
        "prompt_mask": mask[:, :prompt],
        "completion_ids": ids[:, prompt:],
        "completion_mask": completion_mask,
        "advantages": advantages_for(batch).to(ids.device),
        "num_items_in_batch": completion_mask.sum(),
    }


def trl_step(trainer, optimizer, inputs: dict) -> None:
    optimizer.zero_grad(set_to_none=True)
    trainer.compute_loss(trainer.model, inputs).backward()
    optimizer.step()


# ---------------------------------------------------------------- the grid


def build(shape: str, layers: int, device: str, dtype: torch.dtype):
    lm = load_model(f"{shape}:{layers}", device=device, dtype=dtype)
    return lm.model.train(), lm.tokenizer


def measure(peak: PeakMemory, step, warmup=None) -> int:
    """The peak of ``step()``; ``warmup()`` first allocates what persists (optimizer state, RLP's EMA teacher)."""
    if warmup is not None:
        warmup()
    peak.start()
    step()
    return peak.stop()


def run(grid: dict, device: str, dtype: torch.dtype, include_trl: bool = True, include_rlp: bool = True) -> dict:
    dev = torch.device(device)
    peak = PeakMemory(dev)
    rows: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="ponder-memory-"))

    def add(kind: str, shape: str, config: str, vocab: int, work_desc: str, peak_bytes: int, **extra) -> None:
        rows.append(
            {
                "kind": kind,
                "model": f"{shape}:{grid['layers']}",
                "vocab": vocab,
                "config": config,
                "work": work_desc,
                "peak_bytes": int(peak_bytes),
                **extra,
            }
        )
        print(f"  {kind:6s} {shape:20s} {config:34s} {peak_bytes / 2**20:10.1f} MiB", flush=True)

    b, p, c = grid["completions"], grid["prompt"], grid["completion"]
    desc = f"{b} completions of {p}+{c} tokens"
    for shape in grid["vocabs"]:
        base, tok = build(shape, grid["layers"], device, dtype)
        vocab = base.config.vocab_size
        batch = completions_batch(vocab, b, p, c, dev)
        for chunked in (False, True):
            model = copy.deepcopy(base)
            model.get_output_embeddings().weight.requires_grad_(False)  # its gradient would hide the logits' memory
            add(
                "score",
                shape,
                "chunked" if chunked else "unchunked",
                vocab,
                desc,
                measure(peak, lambda m=model, x=batch, ch=chunked: score_step(m, x, ch)),
            )
            del model
        one_row = batch.select(torch.tensor([0]))
        for micro, ckpt in grid["grpo"]:
            model = copy.deepcopy(base)
            set_checkpointing(model, ckpt)
            engine = ponder_engine(model, tok, batch, micro, work / f"grpo-{micro}-{ckpt}")
            config = f"ponder micro_batch={micro or 'none'}" + (" checkpointing" if ckpt else "")
            warm = ponder_engine(model, tok, one_row, None, work / "warm")  # shares the optimizer: its state allocated
            warm.optimizer, warm.scheduler = engine.optimizer, engine.scheduler
            peak_bytes = measure(peak, engine.train_step, warm.train_step)
            add("grpo", shape, config, vocab, desc, peak_bytes, micro_batch=micro, checkpointing=ckpt)
            del engine, warm, model
        if include_trl:
            model = copy.deepcopy(base)
            trainer = trl_trainer(model, tok, batch, work / "trl")
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
            inputs, warm_inputs = trl_inputs(batch), trl_inputs(one_row)
            peak_bytes = measure(
                peak,
                lambda t=trainer, o=optimizer, x=inputs: trl_step(t, o, x),
                lambda t=trainer, o=optimizer, x=warm_inputs: trl_step(t, o, x),
            )
            add("grpo", shape, "trl GRPOTrainer", vocab, desc, peak_bytes)
            del trainer, optimizer, model
        del base
    if include_rlp:
        rows_rlp = rlp_rows(grid, device, dtype, peak, work)
        for r in rows_rlp:
            add(**r)
    return {"rows": rows, **ratios(rows)}


def rlp_rows(grid: dict, device: str, dtype: torch.dtype, peak: PeakMemory, work: Path) -> list[dict]:
    """Whole RLP steps (G = 4, thoughts of 32 tokens, 128-token windows) with and without micro-batches."""
    from ponder.rl.rlp import RLPConfig, RLPTrainer
    from rlp_throughput import make_docs

    base, tok = build(SMOL, grid["layers"], device, dtype)
    docs = make_docs(tok, 16, 200)

    class Texts:
        def stream(self):
            while True:
                yield from ((d, None) for d in docs)

    out = []
    variants = [(None, False, {}), (1, False, {}), (1, True, {}), (1, False, {"ema_dtype": "bf16"})]
    if importlib.util.find_spec("peft") is not None:
        variants.append((1, False, {"lora_rank": LORA_RANK}))
    for micro, ckpt, extra in variants:
        model = copy.deepcopy(base)
        set_checkpointing(model, ckpt)
        cfg = RLPConfig(
            steps=10,
            docs_per_step=grid["rlp_docs"],
            group_size=4,
            max_thought_tokens=32,
            context_length=128,
            micro_batch=micro,
            report_to=["none"],
            batch_layout="padded" if ckpt else "auto",
            **extra,
        )
        trainer = RLPTrainer(model, tok, Texts(), cfg, work / f"rlp-{micro}-{ckpt}-{len(out)}")
        config = f"ponder rlp micro_batch={micro or 'none'}" + (" checkpointing" if ckpt else "")
        config += "".join(f" {k}={v}" for k, v in extra.items())
        desc = f"{grid['rlp_docs']} positions x G=4, thoughts of 32, context 128"
        out.append(
            dict(
                kind="rlp",
                shape=SMOL,
                config=config,
                vocab=base.config.vocab_size,
                work_desc=desc,
                peak_bytes=measure(peak, trainer.train_step, trainer.train_step),
                state_bytes=training_state_bytes(trainer),
                micro_batch=micro,
                checkpointing=ckpt,
            )
        )
        del trainer, model
    return out


def training_state_bytes(trainer) -> int:
    """Bytes of what a trainer holds between steps, counted: weights, optimizer state, the EMA teacher's own tensors
    (a copy, or a LoRA teacher's adapter: its base is the policy's), each storage once."""
    tensors = [*trainer.model.parameters(), *trainer.recipe.ema.parameters()]
    tensors += [t for state in trainer.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def ratios(rows: list[dict]) -> dict:
    """Ratios of peaks measured side by side; without a vocabulary named, at the grid's largest one."""
    largest = max((r["vocab"] for r in rows if r["kind"] in ("score", "grpo")), default=None)

    def find(kind, config, vocab=None):
        for r in rows:
            if r["kind"] == kind and r["config"] == config and r["vocab"] == (vocab or largest):
                return r["peak_bytes"]
        return None

    def ratio(a, b):
        return a / b if a is not None and b else None

    trl = find("grpo", "trl GRPOTrainer")
    full_rlp, lora_rlp = "ponder rlp micro_batch=1", f"ponder rlp micro_batch=1 lora_rank={LORA_RANK}"
    bf16_rlp = "ponder rlp micro_batch=1 ema_dtype=bf16"

    def state(config):
        return next((r["state_bytes"] for r in rows if r["kind"] == "rlp" and r["config"] == config), None)

    return {
        "chunked_over_unchunked": ratio(find("score", "chunked"), find("score", "unchunked")),
        "chunked_over_unchunked_vocab_49152": ratio(find("score", "chunked", 49152), find("score", "unchunked", 49152)),
        "ponder_over_trl": ratio(find("grpo", "ponder micro_batch=1"), trl),
        "ponder_over_trl_one_batch": ratio(find("grpo", "ponder micro_batch=none"), trl),
        "micro_1_over_one_batch": ratio(find("grpo", "ponder micro_batch=1"), find("grpo", "ponder micro_batch=none")),
        "checkpointing_over_none": ratio(
            find("grpo", "ponder micro_batch=none checkpointing"), find("grpo", "ponder micro_batch=none")
        ),
        "rlp_micro_1_over_one_batch": ratio(
            find("rlp", "ponder rlp micro_batch=1", 49152), find("rlp", "ponder rlp micro_batch=none", 49152)
        ),
        "rlp_lora_over_full": ratio(find("rlp", lora_rlp, 49152), find("rlp", full_rlp, 49152)),
        "rlp_lora_state_over_full": ratio(state(lora_rlp), state(full_rlp)),
        "rlp_ema_bf16_state_over_fp32": ratio(state(bf16_rlp), state(full_rlp)),
    }


def table(result: dict) -> str:
    lines = [
        "| step | model | vocab | configuration | work | peak MiB | held state MiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        held = f"{r['state_bytes'] / 2**20:.1f}" if "state_bytes" in r else ""
        lines.append(
            f"| {r['kind']} | {r['model']} | {r['vocab']:,} | {r['config']} | {r['work']} | {r['peak_bytes'] / 2**20:.1f} | {held} |"
        )
    lines.append("")
    for k, v in result.items():
        if k != "rows" and (v is None or isinstance(v, float)):
            lines.append(f"{k}: {'n/a' if v is None else f'{v:.3f}'}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="a reduced grid (one layer, small batches): about a minute on a CPU"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--json", type=Path, help="write the rows and ratios here")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL's GRPOTrainer")
    ap.add_argument("--no-rlp", action="store_true", help="skip the whole RLP steps")
    ap.add_argument(
        "--chunk-elements", type=int, help="logits computed at once by the chunked scorer (default: the library's)"
    )
    args = ap.parse_args(argv)
    if args.chunk_elements:
        logprobs.CHUNK_ELEMENTS = args.chunk_elements
    torch.manual_seed(0)
    grid = GRIDS["quick" if args.quick else "full"]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    include_trl = not args.no_trl
    if include_trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            include_trl = False
    result = run(grid, args.device, dtype, include_trl=include_trl, include_rlp=not args.no_rlp)
    result.update({"device": args.device, "dtype": args.dtype, "grid": grid, "quick": args.quick})
    result["chunk_elements"] = logprobs.CHUNK_ELEMENTS
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
