"""Frozen-LM features of chains and of edits (the inputs of the learned world model).

* chain features: the LM reads ``render_prompt(chain, x)`` for a few fixed probe inputs;
  per probe, the final and middle layers' hidden states are mean-pooled over the prompt and
  the final layer's last position is kept; the probes are averaged. ``[N, 3 * D]``.
* edit features: the mean of the LM's input embeddings over the edit's content text
  (operation, payload and the text it touches; see ``Edit.content``) next to one-hot codes of
  the operation, last (the world model reads that code on its own: ``WorldModel(n_ops=...)``).
  ``[N, D + len(ALL_OPS)]``. Content, not an id: an edit never seen in
  training still lands near edits with similar text.

These forwards read the prompt only (no sampling, no answer) and are counted apart from
outcome queries (``forwards``, ``tokens``). Both are cached by text.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ponder.lm.lens import hidden_states
from ponder.lm.padding import left_pad, model_device, pad_id_of
from ponder.plan.edits import ALL_OPS, Edit
from ponder.plan.state import Chain, render_prompt


class LMFeatures:
    def __init__(self, lm, probe_inputs: list[str], batch_size: int = 16):
        if not probe_inputs:
            raise ValueError("need at least one probe input")
        self.lm, self.probes, self.batch_size = lm, list(probe_inputs), batch_size
        self._chains: dict[str, Tensor] = {}
        self._edits: dict[str, Tensor] = {}
        self.forwards = 0
        self.tokens = 0
        emb = lm.model.get_input_embeddings().weight
        self.hidden = emb.shape[1]
        self.chain_dim = 3 * self.hidden
        self.edit_dim = self.hidden + len(ALL_OPS)

    @torch.no_grad()
    def _pooled(self, texts: list[str]) -> Tensor:
        """``[len(texts), 3 * D]`` pooled hidden states (see module docstring)."""
        tok, model = self.lm.tokenizer, self.lm.model
        out = []
        for start in range(0, len(texts), self.batch_size):
            ids = tok(texts[start : start + self.batch_size], add_special_tokens=True)["input_ids"]
            x, mask = left_pad(ids, pad_id_of(tok), model_device(model))
            states = hidden_states(model, x, mask)
            m = mask.unsqueeze(-1).float()
            final, middle = states[-1].float(), states[len(states) // 2].float()
            pooled = torch.cat([(final * m).sum(1) / m.sum(1), (middle * m).sum(1) / m.sum(1), final[:, -1]], dim=-1)
            out.append(pooled.cpu())
            self.forwards += len(ids)
            self.tokens += int(mask.sum())
        return torch.cat(out)

    def chains(self, chains: list[Chain]) -> Tensor:
        """``[N, chain_dim]`` features of ``chains`` (cached by chain)."""
        todo = list(dict.fromkeys(c.key() for c in chains if c.key() not in self._chains))
        if todo:
            by_key = {c.key(): c for c in chains}
            texts = [render_prompt(by_key[k], x) for k in todo for x in self.probes]
            feats = self._pooled(texts).view(len(todo), len(self.probes), -1).mean(1)
            for k, f in zip(todo, feats):
                self._chains[k] = f
        return torch.stack([self._chains[c.key()] for c in chains]) if chains else torch.zeros(0, self.chain_dim)

    def edits(self, edits: list[Edit], chains: list[Chain]) -> Tensor:
        """``[N, edit_dim]`` features of ``edits[i]`` applied to ``chains[i]`` (cached by content)."""
        rows = []
        emb = self.lm.model.get_input_embeddings().weight
        for e, c in zip(edits, chains):
            text = e.content(c)
            if text not in self._edits:
                ids = self.lm.tokenizer(text, add_special_tokens=False)["input_ids"] or [0]
                with torch.no_grad():
                    mean = emb[torch.as_tensor(ids, device=emb.device)].float().mean(0).cpu()
                onehot = torch.zeros(len(ALL_OPS))
                onehot[ALL_OPS.index(e.op)] = 1.0
                self._edits[text] = torch.cat([mean, onehot])
            rows.append(self._edits[text])
        return torch.stack(rows) if rows else torch.zeros(0, self.edit_dim)
