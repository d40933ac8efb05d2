"""Everything inference needs to turn raw ids into model inputs, and scores into recommendations.

numpy and the standard library only, driven by the plain-JSON spec alone: the
data module trains with exactly this code, and `converge predict` serves with
it without importing torch. Index 0 of every id map is the unknown id: the
models give it no embedding, so an unseen user or item scores from the biases
and side features only (the documented fallback), unless the spec says to
refuse it (`unknown_ids: error`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from converge import ConfigError, DataError

UNKNOWN = 0
UNKNOWN_POLICIES = ("fallback", "error")
FEATURE_KINDS = ("categorical", "multi", "bucket")


class IdMap:
    """Raw id (string) -> index in 1..n; anything else -> 0 (unknown)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = [str(i) for i in ids]
        self.index = {raw: position + 1 for position, raw in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids) + 1  # with the unknown slot

    @classmethod
    def fit(cls, raw: np.ndarray) -> IdMap:
        """Ids in order of first appearance: stable, and identical on every rank."""
        _, first = np.unique(raw, return_index=True)
        return cls(raw[np.sort(first)].tolist())

    def encode(self, raw: Sequence[str], policy: str = "fallback", what: str = "id", source: str = "") -> np.ndarray:
        out = np.fromiter((self.index.get(str(r), UNKNOWN) for r in raw), dtype=np.int64, count=len(raw))
        if policy == "error" and (out == UNKNOWN).any():
            unknown = [str(r) for r, i in zip(raw, out, strict=True) if i == UNKNOWN][:5]
            raise DataError(f"{source or 'input'}: unknown {what} id(s) {unknown}: not in the training data "
                            f"(unknown_ids=error; set unknown_ids=fallback to score them from biases only)")
        return out


class FeatureField:
    """One side feature encoded as columns of a multi-hot vector, with an 'unknown value' column first.

    kinds: `categorical` (one value), `multi` (several values separated by spaces or |, e.g. genres;
    weights 1/sqrt(count)), `bucket` (a number cut at `bounds`, e.g. ages).
    """

    def __init__(self, name: str, kind: str, vocab: Sequence[str] = (), bounds: Sequence[float] = ()) -> None:
        if kind not in FEATURE_KINDS:
            raise ConfigError(f"feature '{name}': kind must be one of {list(FEATURE_KINDS)}, got {kind!r}")
        self.name, self.kind = name, kind
        self.vocab = [str(v) for v in vocab]
        self.bounds = [float(b) for b in bounds]
        self.lookup = {value: position + 1 for position, value in enumerate(self.vocab)}

    @property
    def width(self) -> int:
        return 1 + (len(self.bounds) + 1 if self.kind == "bucket" else len(self.vocab))

    def _tokens(self, value: str) -> list[str]:
        return [t for t in value.replace("|", " ").split() if t] if self.kind == "multi" else [value]

    @classmethod
    def fit(cls, config: Mapping[str, Any], values: Sequence[str]) -> FeatureField:
        name, kind = str(config["name"]), str(config.get("kind", "categorical"))
        if kind == "bucket":
            return cls(name, kind, bounds=config.get("bounds", ()))
        probe = cls(name, kind)
        vocab = sorted({token for value in values for token in probe._tokens(value)})
        return cls(name, kind, vocab=vocab)

    def columns(self, value: str | None) -> list[tuple[int, float]]:
        """(column, weight) pairs of one raw value; a missing or unseen value sets the unknown column."""
        if value is None or value == "":
            return [(0, 1.0)]
        if self.kind == "bucket":
            try:
                number = float(value)
            except ValueError:
                return [(0, 1.0)]
            return [(1 + int(np.searchsorted(self.bounds, number, side="right")), 1.0)]
        hits = [self.lookup.get(token, 0) for token in self._tokens(value)] or [0]
        weight = 1.0 / math.sqrt(len(hits))
        return [(column, weight) for column in hits]

    def to_spec(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "vocab": self.vocab, "bounds": self.bounds}


class FeatureSpace:
    """The side features of users or of items: fields, and the raw values of every indexed id."""

    def __init__(self, fields: Sequence[FeatureField], values: Sequence[Sequence[str] | None]) -> None:
        self.fields = list(fields)
        self.values = list(values)  # by index; index 0 (unknown) has None
        self.offsets = np.cumsum([0] + [f.width for f in self.fields]).tolist()

    @property
    def dim(self) -> int:
        return int(self.offsets[-1])

    def encode_values(self, rows: Sequence[Sequence[str] | None]) -> np.ndarray:
        """Multi-hot float32 matrix (rows, dim) of raw value rows (None: all unknown)."""
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        for r, row in enumerate(rows):
            for f, feature in enumerate(self.fields):
                for column, weight in feature.columns(None if row is None else row[f]):
                    out[r, self.offsets[f] + column] = weight
        return out

    def table(self) -> np.ndarray:
        """The encoded features of every index (row 0: unknown), what training looks rows up in."""
        return self.encode_values(self.values)

    def to_spec(self) -> dict[str, Any]:
        return {"fields": [f.to_spec() for f in self.fields], "dim": self.dim, "values": self.values}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> FeatureSpace:
        if not spec:
            return cls([], [])
        fields = [FeatureField(f["name"], f["kind"], f.get("vocab", ()), f.get("bounds", ())) for f in spec["fields"]]
        return cls(fields, spec["values"])


def fit_features(configs: Sequence[Mapping[str, Any]], ids: IdMap, attributes: Any) -> FeatureSpace:
    """Fit feature encoders on the attributes of the training ids only, and keep each id's raw values."""
    if not configs or attributes is None:
        return FeatureSpace([], [None] * len(ids))
    names = [str(c["name"]) for c in configs]
    missing = [n for n in names if n not in attributes.fields]
    if missing:
        raise ConfigError(f"features {missing} are not among the attribute columns {attributes.fields}")
    positions = [attributes.fields.index(n) for n in names]
    values: list[list[str] | None] = [None]
    for raw in ids.ids:
        row = attributes.values.get(raw)
        values.append(None if row is None else [row[p] for p in positions])
    fields = [FeatureField.fit(config, [row[k] for row in values if row is not None])
              for k, config in enumerate(configs)]
    return FeatureSpace(fields, values)


def build_spec(kind: str, users: IdMap, items: IdMap, train_users: np.ndarray, train_items: np.ndarray,
               ratings: np.ndarray | None, rating_scale: Sequence[float], unknown_ids: str,
               user_features: FeatureSpace, item_features: FeatureSpace, titles: Mapping[str, str]) -> dict[str, Any]:
    """The plain-JSON spec of a training split: id maps, scale, features, titles and what each user rated."""
    if unknown_ids not in UNKNOWN_POLICIES:
        raise ConfigError(f"data.unknown_ids must be one of {list(UNKNOWN_POLICIES)}, got {unknown_ids!r}")
    rated: list[list[int]] = [[] for _ in range(len(users))]
    for u, i in zip(train_users.tolist(), train_items.tolist(), strict=True):
        rated[u].append(i)
    return {
        "kind": kind,
        "users": users.ids,
        "items": items.ids,
        "num_users": len(users),
        "num_items": len(items),
        "unknown_ids": unknown_ids,
        "rating_scale": [float(rating_scale[0]), float(rating_scale[1])],
        # ranking scores are logits: no rating offset
        "global_mean": float(ratings.mean()) if kind == "rating" and ratings is not None and len(ratings) else 0.0,
        "user_features": user_features.to_spec(),
        "item_features": item_features.to_spec(),
        "item_titles": [""] + [titles.get(raw, "") for raw in items.ids] if titles else None,
        "rated": [sorted(set(r)) for r in rated],
    }


class Encoder:
    """The spec's id maps and feature spaces: raw requests -> model input arrays."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        self.users, self.items = IdMap(spec["users"]), IdMap(spec["items"])
        self.user_features = FeatureSpace.from_spec(spec.get("user_features"))
        self.item_features = FeatureSpace.from_spec(spec.get("item_features"))
        self.policy = spec.get("unknown_ids", "fallback")

    def pairs(self, users: Sequence[str], items: Sequence[str], source: str = "",
              user_values: Sequence[Sequence[str] | None] | None = None) -> dict[str, np.ndarray]:
        """Model inputs of (user, item) pairs. A user's side features come from the training data when the user
        is known, else from `user_values` (e.g. age, gender, occupation of a new user), else unknown."""
        user_idx = self.users.encode(users, self.policy, "user", source)
        item_idx = self.items.encode(items, self.policy, "item", source)
        return {
            "user": user_idx,
            "item": item_idx,
            "user_features": self._user_features(user_idx, user_values),
            "item_features": self.item_table[item_idx],
        }

    def _user_features(self, user_idx: np.ndarray,
                       user_values: Sequence[Sequence[str] | None] | None) -> np.ndarray:
        """Encoded side features per user: the training data's for a known user, else `user_values`, else unknown."""
        rows = [self.user_features.values[u] if u != UNKNOWN or user_values is None else user_values[k]
                for k, u in enumerate(user_idx.tolist())] if self.user_features.fields else [None] * len(user_idx)
        return self.user_features.encode_values(rows)

    @cached_property
    def item_table(self) -> np.ndarray:
        """Every item index's encoded features (row 0: unknown), built once: training and serving look rows up."""
        if not self.item_features.fields:
            return np.zeros((len(self.items), 0), dtype=np.float32)
        return self.item_features.table()

    def all_items(self, user: str, source: str = "", user_values: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """One row per known item for `user`: what top-K recommendation scores. The user's features are encoded
        once and repeated (encoding them per item cost about 12 ms a query); the rows equal `pairs`' exactly."""
        user_idx = self.users.encode([user], self.policy, "user", source)
        features = self._user_features(user_idx, None if user_values is None else [user_values])
        count = len(self.items.ids)
        item_idx = np.arange(1, count + 1, dtype=np.int64)  # every known item, in id-map order
        return {
            "user": np.repeat(user_idx, count),
            "item": item_idx,
            "user_features": np.repeat(features, count, axis=0),
            "item_features": self.item_table[item_idx],
        }

    def recommend(self, user: str, scores: np.ndarray, k: int = 10) -> list[dict[str, Any]]:
        """The top-k items `user` has not rated in training (scores: one per known item, in id-map order)."""
        scores = np.asarray(scores, dtype=np.float64).reshape(-1).copy()
        user_index = self.users.index.get(str(user), UNKNOWN)
        rated = np.asarray(self.spec["rated"][user_index], dtype=np.int64) - 1 if user_index else np.empty(0, int)
        scores[rated] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.empty(0, int)
        top = top[np.argsort(-scores[top], kind="stable")]
        titles = self.spec.get("item_titles")
        return [{"item": self.items.ids[i], "score": float(scores[i]),
                 **({"title": titles[i + 1]} if titles else {})} for i in top.tolist()]
