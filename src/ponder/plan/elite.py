"""Elite roots with patience: where the world-model planners plan from, and how they leave a plateau.

A planner that always edits the single best chain so far is stranded when that chain sits on
a plateau: every neighbour scores the same up to the noise of a small input batch, so the
world model cannot rank them and no edit is ever a real improvement. :class:`Elite` keeps
several good chains instead and applies two rules:

* admission with a noise margin: a chain joins the elite only when its real value beats the
  value of the chain it was edited from (its parent) by more than ``margin``; the start chain
  always joins. A plateau therefore does not fill the elite with its near-ties;
* patience: each planning round edits the best elite chain that is not retired (the root);
  a child that is not admitted is a failure of its root, and after ``patience`` failures
  the root is retired and planning restarts from the next-best elite chain. When every elite
  chain is retired, all are reinstated (a new round of restarts with fresh candidates).

Only the ``size`` best admitted chains are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.plan.state import Chain


@dataclass
class EliteEntry:
    chain: Chain
    value: float
    failures: int = 0


@dataclass
class Elite:
    size: int = 8
    patience: int = 3
    margin: float = 0.02
    entries: dict[str, EliteEntry] = field(default_factory=dict)
    restarts: int = 0  # roots retired so far
    resets: int = 0  # times every root was retired and all were reinstated

    def admit(self, chain: Chain, value: float, parent_value: float | None = None) -> bool:
        """Add ``chain`` if it is a start (no parent) or beats ``parent_value`` by more than the margin."""
        if parent_value is not None and value <= parent_value + self.margin:
            return False
        key = chain.key()
        if key not in self.entries:
            self.entries[key] = EliteEntry(chain, value)
            ranked = sorted(self.entries.values(), key=lambda e: -e.value)
            self.entries = {e.chain.key(): e for e in ranked[: self.size]}
        return key in self.entries

    def _live(self) -> list[EliteEntry]:
        return [e for e in self.entries.values() if e.failures < self.patience]

    def root(self) -> Chain | None:
        """The best elite chain that is not retired (reinstating all when every one is); None if empty."""
        if not self.entries:
            return None
        live = self._live()
        if not live:
            self.resets += 1
            for e in self.entries.values():
                e.failures = 0
            live = list(self.entries.values())
        return max(live, key=lambda e: e.value).chain

    def value(self, chain: Chain) -> float | None:
        entry = self.entries.get(chain.key())
        return None if entry is None else entry.value

    def report(self, root: Chain, root_value: float, child: Chain, child_value: float) -> bool:
        """Record the real value of ``child``, an edit of ``root`` (worth ``root_value``); returns whether
        the child was admitted (a non-admitted child is a failure of ``root``)."""
        admitted = self.admit(child, child_value, root_value)
        if not admitted:
            self.fail(root)
        return admitted

    def fail(self, root: Chain, times: int = 1) -> None:
        """Count failures of ``root`` (e.g. ``patience`` at once when it has no untried edit left)."""
        entry = self.entries.get(root.key())
        if entry is None:
            return
        before = entry.failures < self.patience
        entry.failures += times
        if before and entry.failures >= self.patience:
            self.restarts += 1

    def to_json(self) -> dict:
        return {
            "size": len(self.entries),
            "restarts": self.restarts,
            "resets": self.resets,
            "values": sorted((round(e.value, 4) for e in self.entries.values()), reverse=True),
        }
