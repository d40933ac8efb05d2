"""The recommendation data module: load, validate, split, index; and the spec the task is built from.

Interactions are kept as whole tensors and served by the core loader in batches that
the datasets gather themselves (no per-row Python work); ranking negatives are drawn
afresh every epoch from per-row seeds of (seed, epoch, row). Ids and side features are encoded by
`converge_recsys.preprocessing`, the same numpy code `converge predict` serves with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader, Dataset

from converge import ConfigError, DataError, DataModule, SeededDataset
from converge_recsys.preprocessing import Encoder, IdMap, build_spec, fit_features
from converge_recsys.sources import InteractionData
from converge_recsys.splits import split as split_rows

TASKS = ("rating", "ranking")
MISSED = 2.0  # target of a relevant item that cannot be ranked (absent from training): counted, never hit
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# A share of the data held out for a split: a value outside it is refused before anything runs.
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class Rows(Dataset):
    """(user, item, user features, item features, target) rows over whole tensors, a batch at a time: the core
    loader calls `__getitems__` with a batch's indices, and one gather per tensor makes the batch (a per-row
    `__getitem__` and collate would cost a Python call per row)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, targets: np.ndarray, user_table: torch.Tensor,
                 item_table: torch.Tensor) -> None:
        self.users, self.items, self.targets = (torch.from_numpy(a) for a in (users, items, targets))
        self.user_table, self.item_table = user_table, item_table

    def __len__(self) -> int:
        return len(self.targets)

    def __getitems__(self, indices: list[int]) -> Batch:
        rows = torch.tensor(indices)
        return self.batch(self.users[rows], self.items[rows], self.targets[rows])

    def batch(self, users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor) -> Batch:
        return users, items, self.user_table[users], self.item_table[items], targets


class SampledNegatives(SeededDataset):
    """Ranking training rows: the positives, then `negatives` rows per positive whose item is drawn afresh each
    epoch from the row's own seed, which the core's `EpochSampler` derives from (seed, epoch, row): so a resumed
    run and every DDP rank draw the same negatives. Drawn for a whole batch at once in `__getitems__`."""

    def __init__(self, positives: Rows, num_items: int, negatives: int) -> None:
        self.positives, self.num_items, self.negatives = positives, num_items, negatives
        self.users, self.items = positives.users.numpy(), positives.items.numpy()
        self.seen = np.unique(self.users * num_items + self.items)

    def __len__(self) -> int:
        return len(self.positives) * (1 + self.negatives)

    def __getitems__(self, keys: list[tuple[int, int]]) -> Batch:
        rows, seeds = np.fromiter(chain.from_iterable(keys), np.int64, 2 * len(keys)).reshape(-1, 2).T  # asarray: 3x
        positive, negative = rows % len(self.positives), rows >= len(self.positives)
        users, items = self.users[positive], self.items[positive]  # numpy: torch's gathers contend for threads
        items[negative] = sample_unseen(seeds[negative], users[negative], self.seen, self.num_items)
        return self.positives.batch(*(torch.from_numpy(a) for a in (users, items, (~negative).astype(np.float32))))

    def sample(self, index: int) -> Batch:
        """Row `index` alone (`dataset[(index, seed)]`), a negative's item drawn from torch's seeded RNG."""
        return self.__getitems__([(index, int(torch.randint(2**62, ())))])


class UserRankingRows(Dataset):
    """One row per evaluated user: every item, and a target of 1 (held out), 0 (candidate), -1 (excluded:
    already seen, the unknown slot, or not among the sampled candidates), 2 in the unknown slot when a
    held-out item never occurs in training (a relevant item no model can rank: a miss, not a skip)."""

    def __init__(self, users: np.ndarray, targets: np.ndarray, user_table: torch.Tensor,
                 item_table: torch.Tensor) -> None:
        self.users, self.targets = torch.from_numpy(users), torch.from_numpy(targets)
        self.user_table, self.item_table = user_table, item_table
        self.items = torch.arange(targets.shape[1])

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, k: int) -> Batch:
        users = self.users[k].expand(len(self.items))
        return users, self.items, self.user_table[users], self.item_table, self.targets[k]


class RecsysData(DataModule):
    """Interactions from `source`, split by `split` (random | kfold | leave_last_out), for `task` rating or ranking.

    Ranking treats every interaction (or those rated >= `positive_threshold`) as a positive, trains on
    `negatives` sampled items per positive (fresh each epoch), and evaluates by ranking every item
    (`eval_negatives: 0`, full ranking) or the held-out items among `eval_negatives` sampled ones.
    """

    def __init__(self, source: Any, task: str = "rating", split: str = "random", val_fraction: Fraction = 0.1,
                 test_fraction: Fraction = 0.1, num_folds: int | None = None, fold: int = 0, split_seed: int = 0,
                 rating_scale: Sequence[float] = (1.0, 5.0), unknown_ids: str = "fallback",
                 user_features: Sequence[Mapping[str, Any]] = (), item_features: Sequence[Mapping[str, Any]] = (),
                 negatives: int = 4, eval_negatives: int = 0, positive_threshold: float | None = None,
                 max_users: int | None = None, **loader: Any) -> None:
        super().__init__(**loader)
        if task not in TASKS:
            raise ConfigError(f"data.task must be one of {list(TASKS)}, got {task!r}")
        if not hasattr(source, "load"):
            raise ConfigError(f"data.source must build an interactions source (with .load()), got {source!r}")
        self.source, self.task, self.protocol = source, task, split
        self.fractions = (val_fraction, test_fraction)
        self.num_folds, self.fold, self.split_seed = num_folds, fold, split_seed
        self.rating_scale, self.unknown_ids = list(rating_scale), unknown_ids
        self.feature_configs = (list(user_features), list(item_features))
        self.negatives, self.eval_negatives, self.positive_threshold = negatives, eval_negatives, positive_threshold
        self.max_users = max_users
        self._prepared: dict[str, Any] | None = None

    # -- preparation ----------------------------------------------------------------------------
    def _load(self) -> InteractionData:
        data = self.source.load(rating_scale=self.rating_scale)
        rows = data.interactions
        if self.max_users:  # a real slice for quick runs: the first users by id
            keep = np.isin(rows.users, np.unique(rows.users)[: self.max_users])
            data.interactions = rows = rows.take(np.flatnonzero(keep))
        if self.task == "rating" and rows.ratings is None:
            raise ConfigError(f"{rows.source}: data.task=rating needs a rating column (data.source.rating_column)")
        if self.task == "ranking" and self.positive_threshold is not None:
            if rows.ratings is None:
                raise ConfigError("data.positive_threshold needs a rating column")
            data.interactions = rows.take(np.flatnonzero(rows.ratings >= self.positive_threshold))
        if len(data.interactions) < 3:
            raise DataError(f"{rows.source}: too few interactions to split ({len(data.interactions)})")
        return data

    def _prepare(self) -> dict[str, Any]:
        if self._prepared is not None:
            return self._prepared
        data = self._load()
        rows = data.interactions
        parts = split_rows(self.protocol, rows.users, rows.timestamps, val_fraction=self.fractions[0],
                           test_fraction=self.fractions[1], num_folds=self.num_folds, fold=self.fold,
                           seed=self.split_seed)
        train = rows.take(parts["train"])
        users, items = IdMap.fit(train.users), IdMap.fit(train.items)
        spec = build_spec(self.task, users, items, users.encode(train.users), items.encode(train.items),
                          train.ratings, self.rating_scale, self.unknown_ids,
                          fit_features(self.feature_configs[0], users, data.users),
                          fit_features(self.feature_configs[1], items, data.items),
                          data.items.titles if data.items else {})
        encoder = Encoder(spec)
        user_idx, item_idx = users.encode(rows.users), items.encode(rows.items)  # fallback: unknown -> 0
        self._prepared = {
            "spec": spec, "parts": parts, "user_idx": user_idx, "item_idx": item_idx, "ratings": rows.ratings,
            "user_table": torch.from_numpy(encoder.user_features.table()),
            "item_table": torch.from_numpy(encoder.item_table),
        }
        return self._prepared

    def spec(self) -> dict[str, Any]:
        return self._prepare()["spec"]

    def setup(self, stage: str | None = None) -> None:
        self._prepare()

    # -- datasets -------------------------------------------------------------------------------
    def _rows(self, part: str) -> Rows:
        """The part's interactions; targets: ratings, or 1 (positives) for ranking."""
        p = self._prepare()
        idx = p["parts"][part]
        targets = p["ratings"][idx] if self.task == "rating" else np.ones(len(idx))
        return Rows(p["user_idx"][idx], p["item_idx"][idx], targets.astype(np.float32), p["user_table"],
                    p["item_table"])

    def ranking_targets(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """(evaluated users, target matrix users x items) of the val or test part; test also hides val items."""
        p = self._prepare()
        num_items = p["spec"]["num_items"]
        held = p["parts"][part]
        seen_parts = ["train"] + (["val"] if part == "test" else [])
        seen = np.concatenate([p["parts"][s] for s in seen_parts])
        users = np.unique(p["user_idx"][held])
        users = users[users != 0]  # users absent from training cannot be ranked for
        row_of = np.full(p["spec"]["num_users"], -1)
        row_of[users] = np.arange(len(users))
        targets = np.zeros((len(users), num_items), dtype=np.float32)
        if self.eval_negatives:
            targets[:] = -1
            rng = np.random.default_rng(self.split_seed + 7)
            sampled = rng.integers(1, num_items, size=(len(users), self.eval_negatives))
            np.put_along_axis(targets, sampled, 0.0, axis=1)
        rows = row_of[p["user_idx"][seen]]
        targets[rows[rows >= 0], p["item_idx"][seen][rows >= 0]] = -1
        rows = row_of[p["user_idx"][held]]
        held_items = p["item_idx"][held]
        ok = (rows >= 0) & (held_items != 0)
        targets[rows[ok], held_items[ok]] = 1
        targets[:, 0] = -1  # the unknown-item slot is never recommended...
        lost = (rows >= 0) & (held_items == 0)
        targets[rows[lost], 0] = MISSED  # ...but a held-out item unseen in training still counts, as a miss
        return users, targets

    def _ranking_eval_rows(self, part: str) -> UserRankingRows:
        users, targets = self.ranking_targets(part)
        p = self._prepare()
        return UserRankingRows(users, targets, p["user_table"], p["item_table"])

    def _eval(self, part: str) -> DataLoader:
        rows = self._rows(part) if self.task == "rating" else self._ranking_eval_rows(part)
        return self.loader(rows, train=False)

    def train_dataloader(self) -> DataLoader:
        rows = self._rows("train")
        if self.task == "ranking":
            rows = SampledNegatives(rows, self._prepare()["spec"]["num_items"], self.negatives)
        return self.loader(rows, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._eval("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval("test")


def sample_unseen(seeds: np.ndarray, users: np.ndarray, positives: np.ndarray, num_items: int,
                  rounds: int = 5) -> np.ndarray:
    """One item in 1..num_items-1 per user that the user has no training interaction with (`positives`: the sorted
    `user * num_items + item` of those), a function of its seed alone (redrawn up to `rounds` times; a user who
    rated nearly everything may keep a rare collision)."""
    items, redraw = draw(seeds, 0, num_items), np.arange(len(seeds))
    for round_ in range(1, rounds + 1):
        pairs = users[redraw] * num_items + items[redraw]
        redraw = redraw[positives[np.searchsorted(positives, pairs).clip(max=len(positives) - 1)] == pairs]
        if not len(redraw):
            break
        items[redraw] = draw(seeds[redraw], round_, num_items)
    return items


def draw(seeds: np.ndarray, round_: int, num_items: int) -> np.ndarray:
    """An item in 1..num_items-1 per seed and round: splitmix64's mix of the two, vectorised (numpy has no
    generator per element, and one per row would cost a Python call each)."""
    z = seeds.astype(np.uint64) + np.uint64(round_ * 0x9E3779B97F4A7C15 % 2**64)  # arrays wrap mod 2**64
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (1 + (z ^ (z >> np.uint64(31))) % np.uint64(num_items - 1)).astype(np.int64)
