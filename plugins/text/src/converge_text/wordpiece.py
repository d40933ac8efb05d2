"""A pretrained model's own WordPiece tokenizer, through Hugging Face `tokenizers` (Rust; no torch).

The data module builds it from the pretrained folder's `tokenizer.json` (`data.tokenizer.pretrained`);
its spec carries that file's content, so `converge predict` rebuilds the very tokenizer the model trained
with from the bundle alone, and a pretrained encoder reads ids from its own vocabulary. It has the word
tokenizer's interface (`encode`, `encode_batch`, `to_spec`, `num_ids`), so the data module and the
preprocessor do not care which one they hold. Ids are [CLS] pieces [SEP], truncated to `max_length`
pieces; padding is id 0, which must be the vocabulary's [PAD] (BERT's is).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from converge import ConfigError, locate
from converge_text.tokenizer import PAD_ID, pad

KIND = "wordpiece"


class WordPieceTokenizer:
    """The model's WordPiece tokenizer, truncating to `max_length` pieces, padding left to `pad`.

    Args:
        definition: the content of a `tokenizer.json` (Hugging Face `tokenizers` format).
        max_length: pieces kept per text, [CLS] and [SEP] included.
    """

    def __init__(self, definition: str, max_length: int = 128) -> None:
        self.definition, self.max_length = definition, max_length
        self.tokenizer = Tokenizer.from_str(definition)
        if self.tokenizer.token_to_id("[PAD]") not in (None, PAD_ID):
            raise ConfigError(f"this tokenizer pads with id {self.tokenizer.token_to_id('[PAD]')}, "
                              f"but converge pads with {PAD_ID}")
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    @classmethod
    def from_pretrained(cls, source: str, max_length: int = 128) -> WordPieceTokenizer:
        """The tokenizer of a pretrained source: `package:<distribution>` or a Hugging Face-format folder."""
        path = locate(source) / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(f"pretrained source {source}: no tokenizer.json in {path.parent}")
        return cls(path.read_text(encoding="utf-8"), max_length)

    def to_spec(self) -> dict[str, Any]:
        """Plain JSON that rebuilds this tokenizer exactly (`from_spec`)."""
        return {"kind": KIND, "max_length": self.max_length, "definition": json.loads(self.definition)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> WordPieceTokenizer:
        return cls(json.dumps(spec["definition"]), int(spec["max_length"]))

    @property
    def num_ids(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def unknown_id(self) -> int | None:
        """The id of [UNK], a piece out of the vocabulary (None when the model has none)."""
        return self.tokenizer.token_to_id("[UNK]")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: Sequence[str], min_length: int = 1) -> np.ndarray:
        """int64 (len(texts), longest) ids padded with PAD_ID: encoded in parallel by the Rust tokenizer."""
        return pad([encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))], min_length)
