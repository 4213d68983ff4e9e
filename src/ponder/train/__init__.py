"""Training infrastructure shared by every job, and what a run costs.

next_token.py (next-token training), optim.py (optimizers and schedules), guard.py (no non-finite number
reaches the weights), checkpoint.py, checkpoint_checks.py and state.py (resumable checkpoints without pickle),
rundir.py, run_config.py and safe_files.py (run directories), metrics.py and trackers.py (per-step metrics),
reproducible.py (fixed threads, weight fingerprints), compute.py (RLP's FLOP account and the compute-matched
CPT budget), memory_model.py (what a training step holds in memory, on paper).
"""
