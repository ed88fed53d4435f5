"""The text encoder's tokenizer: a byte-level BPE (Hugging Face `tokenizers`) trained once by the build on
the captions' word counts, shipped beside the manifest.  Byte-level, so no name is ever unknown: a species
the captions never named still splits into pieces the encoder has seen."""
from __future__ import annotations

import re
from collections.abc import Iterator

SPECIALS = ("[PAD]", "[UNK]", "[CLS]")   # ids 0, 1, 2: the text encoder treats id 0 as padding
WORD = re.compile(r"\S+")
MAX_REPEAT = 64   # a word's count, capped, as it goes to the trainer: merges follow frequency, memory does not


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _lines(counts: dict[str, int]) -> Iterator[str]:
    for word in sorted(counts):
        yield " ".join([word] * min(MAX_REPEAT, counts[word]))


def train_subword(counts: dict[str, int], vocab_size: int = 4000) -> str:
    """A tokenizer JSON from word counts (bounded by the vocabulary, not by the number of captions)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_lines(counts), trainer=trainer)
    return tok.to_str()
