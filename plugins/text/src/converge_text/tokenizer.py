"""Text -> token ids, the one implementation used by training and by inference.

Imports only the standard library and numpy: the inference runtime loads this
module with the plain-JSON spec the data module wrote (`TextTokenizer.from_spec`),
so a served model tokenizes exactly as it was trained, without torch or training code.

Ids: 0 is padding, 1 an unknown word, 2 .. V+1 the vocabulary (most frequent
training words first), then `bigram_buckets` ids for word bigrams hashed
fastText-style (zlib.crc32, stable across processes and machines, unlike `hash`).
A document's ids are its words in order, then (when bigrams are on) its bigrams in order
(`term_frequency: raw`). Bag models may take a bag instead, each distinct id at its first
occurrence: once (`binary`), or 1 + floor(log2(count)) times (`log`, the sublinear tf of
tf-idf: a word said 8 times weighs 4, not 8): shorter rows, and no frequent word drowns the rest.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PAD_ID = 0
UNKNOWN_ID = 1
FIRST_WORD_ID = 2
SPEC_VERSION = 1
TERM_FREQUENCIES = ("raw", "binary", "log")
# Words (with an inner apostrophe: "don't") and single punctuation marks, which carry sentiment ("!", "?").
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class TextTokenizer:
    """Lower-cased word unigrams from a fixed vocabulary, plus hashed word bigrams.

    Args:
        vocabulary: the known words, id FIRST_WORD_ID + position.
        bigram_buckets: how many hashed-bigram ids follow the vocabulary; 0 turns bigrams off
            (for sequence models, whose positions must stay words).
        max_words: words kept from the start of a text (longer texts are truncated).
        lowercase: lower-case before splitting.
        term_frequency: raw (every id in text order), binary or log (a bag: for bag models only).
    """

    vocabulary: tuple[str, ...]
    bigram_buckets: int = 0
    max_words: int = 512
    lowercase: bool = True
    term_frequency: str = "raw"

    def __post_init__(self) -> None:
        if self.term_frequency not in TERM_FREQUENCIES:
            raise ValueError(f"term_frequency must be one of {TERM_FREQUENCIES}, got {self.term_frequency!r}")
        object.__setattr__(self, "_ids", {word: FIRST_WORD_ID + i for i, word in enumerate(self.vocabulary)})

    # -- building and (de)serialising ------------------------------------------------------------------
    @classmethod
    def build(cls, texts: Iterable[str], max_vocab: int = 50_000, min_count: int = 1, bigram_buckets: int = 0,
              max_words: int = 512, lowercase: bool = True, term_frequency: str = "raw") -> TextTokenizer:
        """Learn the vocabulary from (training) texts: the `max_vocab` most frequent words seen `min_count`+ times.

        Ties in frequency are broken alphabetically, so the same texts always give the same ids.
        """
        counts: Counter[str] = Counter()
        splitter = cls((), 0, max_words, lowercase)
        for text in texts:
            counts.update(splitter.words(text))
        ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
        return cls(tuple(word for word, _ in ranked[:max_vocab]), bigram_buckets, max_words, lowercase,
                   term_frequency)

    def to_spec(self) -> dict[str, Any]:
        """Plain JSON that rebuilds this tokenizer exactly (`from_spec`)."""
        return {"version": SPEC_VERSION, "kind": "words+hashed_bigrams", "lowercase": self.lowercase,
                "max_words": self.max_words, "bigram_buckets": self.bigram_buckets,
                "term_frequency": self.term_frequency, "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> TextTokenizer:
        if spec.get("version") != SPEC_VERSION:
            raise ValueError(f"tokenizer spec version {spec.get('version')!r} is not {SPEC_VERSION}")
        return cls(tuple(spec["vocabulary"]), int(spec["bigram_buckets"]), int(spec["max_words"]),
                   bool(spec["lowercase"]), str(spec["term_frequency"]))

    @property
    def unknown_id(self) -> int:
        """The id of a word out of the vocabulary."""
        return UNKNOWN_ID

    @property
    def num_ids(self) -> int:
        """Size of the id space (padding, unknown, vocabulary, bigram buckets): the embedding table's rows."""
        return FIRST_WORD_ID + len(self.vocabulary) + self.bigram_buckets

    # -- encoding --------------------------------------------------------------------------------------
    def words(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        return _TOKEN.findall(text)[: self.max_words]

    def encode(self, text: str) -> list[int]:
        """The ids of one text (unpadded). An empty text has no ids."""
        words = self.words(text)
        ids = [self._ids.get(word, UNKNOWN_ID) for word in words]  # type: ignore[attr-defined]
        if self.bigram_buckets:
            offset = FIRST_WORD_ID + len(self.vocabulary)
            ids += [offset + zlib.crc32(f"{a} {b}".encode()) % self.bigram_buckets
                    for a, b in zip(words, words[1:], strict=False)]
        if self.term_frequency == "raw":
            return ids
        counts = Counter(ids)  # in first-occurrence order
        if self.term_frequency == "binary":
            return list(counts)
        return [i for i, count in counts.items() for _ in range(count.bit_length())]  # 1 + floor(log2(count))

    def encode_batch(self, texts: Sequence[str], min_length: int = 1) -> np.ndarray:
        """int64 (len(texts), longest) ids padded with PAD_ID; at least `min_length` columns.

        An empty text becomes an all-padding row: models read it as "no evidence" (their bias alone).
        """
        return pad([self.encode(text) for text in texts], min_length)


def tokenizer_from_spec(spec: dict[str, Any]) -> Any:
    """The tokenizer a spec describes: the word tokenizer, or a pretrained model's WordPiece one."""
    if spec.get("kind") == "wordpiece":
        from converge_text.wordpiece import WordPieceTokenizer  # imports `tokenizers`: only where it is used

        return WordPieceTokenizer.from_spec(spec)
    return TextTokenizer.from_spec(spec)


def pad(sequences: Sequence[Sequence[int]], min_length: int = 1) -> np.ndarray:
    """Right-pad id lists with PAD_ID into one int64 matrix."""
    width = max([min_length, *map(len, sequences)])
    batch = np.full((len(sequences), width), PAD_ID, dtype=np.int64)
    for row, ids in enumerate(sequences):
        batch[row, : len(ids)] = ids
    return batch


def unpad(batch: np.ndarray) -> list[np.ndarray]:
    """The rows of a padded id matrix without their padding (PAD_ID is never a real id)."""
    return [row[row != PAD_ID] for row in batch]


def bags(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Id lists as one bag-of-ids input: every id end to end (int64), and where each list starts (offsets).

    What bag models (fastText) are served on: nothing to read but ids, where a padded batch of 64 news stories
    is 76-86% padding. An empty list is an empty bag (its offset repeats the next one's).
    """
    lengths = np.array([len(ids) for ids in sequences], dtype=np.int64)
    flat = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in sequences] or [np.empty(0, np.int64)])
    return flat, np.cumsum(lengths) - lengths
