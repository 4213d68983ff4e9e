"""RL recipes and their math: RLP, GRPO and TTRL, and what they share.

Recipes: rlp.py (with positions.py and rollout.py: where RLP thinks and the rollouts it scores), grpo.py
(with prompts.py: the prompt pool), ttrl.py. Their math: advantages.py (rewards to group advantages), losses.py
(clipped surrogate, KL, next-token terms), ema.py (the EMA teacher), hicra.py (planning tokens), theory.py
(RLP's closed forms). Around them: batches.py (the training batch), generation.py and vllm_backend.py (where
thoughts are sampled), formats.py (output-format shares). The engine that runs the recipes: engine.py,
micro.py, distributed.py, sharding.py.
"""
