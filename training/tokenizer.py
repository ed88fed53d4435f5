"""Text to ids for the text encoder: the build's subword tokenizer (`SubwordTokenizer`, a Hugging Face
`tokenizers` byte-level BPE shipped beside the manifest), or, for checkpoints from before it, the old
word-level tokenizer."""
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

    def pieces(self, text: str) -> list[str]:
        return [w if w in self.index else UNK for w in words(text)]

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
    def from_state(cls, state: dict):
        """Any tokenizer a checkpoint or an export holds."""
        if state.get("kind") == "hf":  # a pretrained text tower's own tokenizer, from its local folder
            from bestiary.training.pretrained import HFTokenizer
            return HFTokenizer(state["path"], state["max_len"])
        if state.get("kind") == "subword":
            return SubwordTokenizer(state["json"], state["max_len"])
        return cls(state["vocab"], state["max_len"])


class SubwordTokenizer:
    """The build's byte-level BPE: every string encodes (no `<unk>`), ids padded with 0, <cls> first."""

    def __init__(self, spec: str, max_len: int = 32):
        from tokenizers import Tokenizer as HF
        self.json, self.max_len = spec, max_len
        self.tok = HF.from_str(spec)
        self.cls_id = self.tok.token_to_id("[CLS]")
        if self.tok.token_to_id("[PAD]") != 0:
            raise ValueError("a subword tokenizer must have [PAD] as id 0")

    @property
    def vocab(self) -> list[str]:
        return [t for t, _ in sorted(self.tok.get_vocab().items(), key=lambda kv: kv[1])]

    def encode(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, enc in enumerate(self.tok.encode_batch(list(texts), add_special_tokens=False)):
            ids = ([self.cls_id] + enc.ids)[: self.max_len]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def pieces(self, text: str) -> list[str]:
        return self.tok.encode(text, add_special_tokens=False).tokens

    def state(self) -> dict:
        return {"kind": "subword", "json": self.json, "max_len": self.max_len}
