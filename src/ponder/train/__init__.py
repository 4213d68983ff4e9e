"""The one training loop every job that trains runs on, and what a run costs.

The loop: engine.py (optimizer, PPO epochs, behaviour policy and its importance correction, data parallelism,
checkpoints and resume; a job is a recipe on it), batch.py (the one batch contract the loop reads), losses.py
(the loss terms, each declaring what it averages over: clipped surrogate, KL, next-token), micro.py
(micro-batches), distributed.py (DDP) and sharding.py (FSDP2), next_token.py (the next-token recipe: base, CPT,
TRELAWNEY, refinement, early experience), optim.py (optimizers and schedules), guard.py (no non-finite number
reaches the weights). Runs: checkpoint.py, checkpoint_checks.py and state.py (resumable checkpoints without
pickle), rundir.py, run_config.py and safe_files.py (run directories), metrics.py and trackers.py (per-step
metrics), reproducible.py (fixed threads, weight fingerprints). Costs: compute.py (RLP's FLOP account and the
compute-matched CPT budget), memory_model.py (what a training step holds in memory, on paper).
"""
