"""A word-level tokenizer trained on the captions (lower case, words and digits)."""
from __future__ import annotations

import re
from collections import Counter

import torch

PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class Tokenizer:
    def __init__(self, vocab: list[str], max_len: int = 32):
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        self.max_len = max_len

    @classmethod
    def train(cls, texts: list[str], min_count: int = 1, max_len: int = 32) -> "Tokenizer":
        counts = Counter(w for t in texts for w in words(t))
        vocab = [PAD, UNK, CLS] + sorted(w for w, c in counts.items() if c >= min_count)
        return cls(vocab, max_len)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(batch, max_len) ids; position 0 is <cls>, then words, then padding."""
        out = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.index[CLS]] + [self.index.get(w, self.index[UNK]) for w in words(t)]
            ids = ids[: self.max_len]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def state(self) -> dict:
        return {"vocab": self.vocab, "max_len": self.max_len}

    @classmethod
    def from_state(cls, state: dict) -> "Tokenizer":
        if state.get("kind") == "hf":  # a pretrained text tower's own tokenizer, from its local folder
            from bestiary.training.pretrained import HFTokenizer
            return HFTokenizer(state["path"], state["max_len"])
        return cls(state["vocab"], state["max_len"])
