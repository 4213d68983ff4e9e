"""A pool of training prompts visited in epochs, with overly hard prompts set aside.

Group-relative RL learns nothing useful from a prompt none of whose G samples is right (pass
rate 0): every reward is equal, or, mixed with shaping terms, only the shaping is learned, which
teaches shortcuts. Such a prompt is *set aside*: not trained on now, and moved to the end of the
next epoch's order, so it is revisited once the model has improved on the rest.
"""

from __future__ import annotations

import torch

from ponder.errors import PonderError


class PromptPool:
    """Indices ``0 .. size-1`` drawn in a seeded shuffled order, epoch after epoch.

    :meth:`next_batch` returns the next ``k`` indices (crossing epochs when needed);
    :meth:`set_aside` defers an index to the end of the next epoch. ``revisiting`` holds the
    indices set aside in the previous epoch (so callers can log what happens on revisit).
    The whole state is in :meth:`state_dict` for exact resume.
    """

    def __init__(self, size: int, seed: int = 0):
        if size < 1:
            raise ValueError("the prompt pool needs at least one prompt")
        self.size, self.seed = size, seed
        self.epoch, self.pos = 0, 0
        self.set_aside_now: list[int] = []  # deferred during the current epoch
        self.revisiting: set[int] = set()  # deferred during the previous epoch
        self.order = self._order(0, [])

    def _order(self, epoch: int, deferred: list[int]) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.size, generator=gen).tolist()
        late = set(deferred)
        return [i for i in perm if i not in late] + [i for i in perm if i in late]

    def _new_epoch(self) -> None:
        self.epoch += 1
        self.revisiting = set(self.set_aside_now)
        self.order = self._order(self.epoch, self.set_aside_now)
        self.set_aside_now, self.pos = [], 0

    def next_batch(self, k: int) -> list[int]:
        if k > self.size:
            raise ValueError(f"a batch of {k} prompts needs a pool of at least {k} (have {self.size})")
        out = []
        while len(out) < k:
            if self.pos == self.size:
                self._new_epoch()
            take = min(k - len(out), self.size - self.pos)
            out += self.order[self.pos : self.pos + take]
            self.pos += take
        return out

    def set_aside(self, index: int) -> None:
        """Defer ``index`` (already drawn this epoch) to the end of the next epoch."""
        if index not in self.set_aside_now:
            self.set_aside_now.append(index)

    def state_dict(self) -> dict:
        return {
            "size": self.size,
            "seed": self.seed,
            "epoch": self.epoch,
            "pos": self.pos,
            "order": list(self.order),
            "set_aside_now": list(self.set_aside_now),
            "revisiting": sorted(self.revisiting),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved pool; a state that is not a pool of this size (a forged or foreign one) is a
        :class:`~ponder.errors.PonderError`."""
        if state["size"] != self.size:
            raise PonderError(f"the checkpointed prompt pool has {state['size']} prompts, this task {self.size}")
        indices = set(range(self.size))
        order = state["order"]
        if (
            sorted(order) != sorted(indices)
            or not (isinstance(state["pos"], int) and 0 <= state["pos"] <= self.size)
            or not set(state["set_aside_now"]) | set(state["revisiting"]) <= indices
        ):
            raise PonderError("the checkpointed prompt pool is inconsistent (order, position or set-aside prompts)")
        self.seed, self.epoch, self.pos, self.order = state["seed"], state["epoch"], state["pos"], list(state["order"])
        self.set_aside_now, self.revisiting = list(state["set_aside_now"]), set(state["revisiting"])
