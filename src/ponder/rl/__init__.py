"""RL recipes and their math: RLP, GRPO and TTRL, each a recipe on the one training loop (:mod:`ponder.train`).

Recipes: rlp.py (with positions.py and rollout.py: where RLP thinks and the rollouts it scores), grpo.py
(with prompts.py: the prompt pool), ttrl.py. Their math: advantages.py (rewards to group advantages),
ema.py (the EMA teacher), hicra.py (planning tokens), theory.py (RLP's closed forms). Around them:
batches.py (the two layouts of the training batch), generation.py and vllm_backend.py (where thoughts and
completions are sampled), formats.py (output-format shares).
"""
