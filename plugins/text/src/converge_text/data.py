"""The text classification data module: split, tokenize once, batch by padding; and the spec.

Texts are turned into id arrays once, in `setup`, by the same `TextTokenizer`
the inference runtime uses; a batch is then only padding (no per-batch Python
tokenization, nothing that can fail inside a DataLoader worker). The tokenizer
and the class names are learned from the training split alone and returned by
`spec()`, so they travel with the checkpoint and the export bundle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader, Dataset

from converge import ConfigError, DataError, DataModule, check_folds, stratified_split, validation_split
from converge_text.sources import Corpus, LabelledTexts
from converge_text.tokenizer import TextTokenizer, pad

_TOKENIZER_DEFAULTS = {"max_vocab": 50_000, "min_count": 1, "bigram_buckets": 0, "max_words": 512, "lowercase": True,
                       "term_frequency": "raw", "pretrained": None}

# A share of the data held out for a split: a value outside it is refused before anything runs.
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class EncodedTexts(Dataset):
    """Token id arrays and label ids of one split."""

    def __init__(self, ids: list[np.ndarray], labels: np.ndarray) -> None:
        self.ids, self.labels = ids, labels
        self.lengths = [len(row) for row in ids]  # tokens: what `data.group_by_length` groups training batches by

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.ids[index], int(self.labels[index])


def collate(batch: Sequence[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids int64 (batch, longest), labels int64 (batch,)): right-padded with 0."""
    ids, labels = zip(*batch, strict=True)
    return torch.from_numpy(pad(ids)), torch.tensor(labels, dtype=torch.int64)


class TextClassificationData(DataModule):
    """Labelled texts from `source`, split into train/val/test with fixed, stratified, seeded splits.

    Args:
        source: builds a `Corpus` (`.load()`): a built-in corpus or your CSV/JSONL.
        tokenizer: `TextTokenizer.build` settings: max_vocab, min_count, bigram_buckets (0: words only),
            max_words, lowercase, term_frequency (raw, binary, log); or `pretrained: <source>`, a pretrained
            model's own WordPiece tokenizer (its vocabulary, max_words pieces; the word settings then unused).
        test_fraction: used only when the source has no test split of its own.
        val_fraction: of the training split (never of test); used when `num_folds` is null.
        num_folds, fold: cross-validation: validation is fold `fold` of a stratified `num_folds`-fold
            partition of the training split (seeded by split_seed), the other folds train; test never changes.
        max_docs: keep at most this many documents of each split (a seeded stratified sample): for
            quick checks and tests on slices of the real data; null keeps everything.
        per_class: few-shot training: train on this many documents of each class (seeded; validation and
            test unchanged, so pair it with a fixed schedule, monitor.keep=last); null trains on all.
    """

    def __init__(self, source: Any, tokenizer: Mapping[str, Any] | None = None, test_fraction: Fraction = 0.2,
                 val_fraction: Fraction = 0.1, split_seed: int = 0, max_docs: int | None = None,
                 num_folds: int | None = None, fold: int = 0, per_class: int | None = None, **loader: Any) -> None:
        super().__init__(**loader)
        check_folds(num_folds, fold)
        if not hasattr(source, "load"):
            raise ConfigError(f"data.source must build a text source (with .load()), got {type(source).__name__}")
        unknown = set(tokenizer or {}) - set(_TOKENIZER_DEFAULTS)
        if unknown:
            raise ConfigError(f"data.tokenizer: unknown settings {sorted(unknown)}; "
                              f"known: {sorted(_TOKENIZER_DEFAULTS)}")
        self.source = source
        self.tokenizer_settings = {**_TOKENIZER_DEFAULTS, **(tokenizer or {})}
        self.test_fraction, self.val_fraction, self.split_seed = test_fraction, val_fraction, split_seed
        self.max_docs, self.num_folds, self.fold, self.per_class = max_docs, num_folds, fold, per_class
        self._prepared: dict[str, Any] | None = None

    # -- preparing: split, learn the vocabulary on train, encode every split ---------------------------------
    def _prepare(self) -> dict[str, Any]:
        if self._prepared is None:
            splits = self.split_corpus(self.source.load())
            class_names = sorted(set(splits["train"].labels))
            if len(class_names) < 2:
                raise DataError(f"the training split has {len(class_names)} class(es) {class_names}; "
                                f"classification needs at least 2")
            tokenizer = self._tokenizer(splits["train"].texts)
            index = {name: i for i, name in enumerate(class_names)}
            encoded = {name: self._encode(part, tokenizer, index, name) for name, part in splits.items()}
            self._prepared = {"class_names": class_names, "tokenizer": tokenizer, "datasets": encoded}
        return self._prepared

    def split_corpus(self, corpus: Corpus) -> dict[str, LabelledTexts]:
        """train, val and test of `corpus`: the corpus's test split (or a stratified test_fraction), val from train."""
        train = self._limit(corpus.train, 0)
        if corpus.test is not None:
            test = self._limit(corpus.test, 1)
        else:
            keep, held = stratified_split(np.asarray(train.labels), self.test_fraction, self.split_seed)
            train, test = _take(train, keep), _take(train, held)
        keep, held = validation_split(np.asarray(train.labels), self.val_fraction, self.num_folds, self.fold,
                                      self.split_seed + 1)
        train, val = _take(train, keep), _take(train, held)
        if self.per_class:
            train = _take(train, per_class_sample(np.asarray(train.labels), self.per_class, self.split_seed + 20))
        return {"train": train, "val": val, "test": test}

    def _limit(self, part: LabelledTexts, offset: int) -> LabelledTexts:
        if not self.max_docs or len(part) <= self.max_docs:
            return part
        _, kept = stratified_split(np.asarray(part.labels), self.max_docs / len(part), self.split_seed + 10 + offset)
        return _take(part, kept)

    def _tokenizer(self, texts: Sequence[str]) -> Any:
        settings = dict(self.tokenizer_settings)
        source = settings.pop("pretrained")
        if source:
            from converge_text.wordpiece import WordPieceTokenizer  # imports `tokenizers`: only where it is used

            return WordPieceTokenizer.from_pretrained(str(source), max_length=int(settings["max_words"]))
        return TextTokenizer.build(texts, **settings)

    @staticmethod
    def _encode(part: LabelledTexts, tokenizer: TextTokenizer, index: dict[str, int], split: str) -> EncodedTexts:
        unknown = [(origin, label) for label, origin in zip(part.labels, part.origins, strict=True)
                   if label not in index]
        if unknown:
            origin, label = unknown[0]
            raise DataError(f"{origin}: label '{label}' of the {split} split never occurs in the training split "
                            f"({len(unknown)} such row(s)); known labels: {', '.join(index)}")
        ids = [np.asarray(tokenizer.encode(text), dtype=np.int64) for text in part.texts]
        return EncodedTexts(ids, np.asarray([index[label] for label in part.labels], dtype=np.int64))

    # -- the DataModule contract -------------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        prepared = self._prepare()
        tokenizer: TextTokenizer = prepared["tokenizer"]
        return {"class_names": prepared["class_names"], "num_classes": len(prepared["class_names"]),
                "num_ids": tokenizer.num_ids, "tokenizer": tokenizer.to_spec()}

    def document_frequencies(self) -> tuple[np.ndarray, int]:
        """(in how many training documents each id occurs, how many training documents): for idf weights."""
        train = self.dataset("train")
        counts = np.zeros(self._prepare()["tokenizer"].num_ids, dtype=np.int64)
        for ids in train.ids:
            counts[np.unique(ids)] += 1
        return counts, len(train)

    def setup(self, stage: str | None = None) -> None:
        self._prepare()

    def dataset(self, split: str) -> EncodedTexts:
        return self._prepare()["datasets"][split]

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("train"), train=True, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("val"), train=False, collate_fn=collate)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("test"), train=False, collate_fn=collate)


def per_class_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Positions of `count` random rows of each class (all of a smaller class), in their original order."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:count] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def _take(part: LabelledTexts, indices: np.ndarray) -> LabelledTexts:
    return LabelledTexts([part.texts[i] for i in indices], [part.labels[i] for i in indices],
                         [part.origins[i] for i in indices])
