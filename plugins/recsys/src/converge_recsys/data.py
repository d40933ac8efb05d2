"""The recommendation data module: load, validate, split, index; and the spec the task is built from.

Interactions are kept as whole tensors and served in big batches by `EpochBatches`
(no per-row Python work), and ranking negatives are drawn afresh every epoch
from a seeded generator. Ids and side features are encoded by
`converge_recsys.preprocessing`, the same numpy code `converge predict` serves with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from converge import ConfigError, DataError, DataModule, ShardSampler, world_and_rank
from converge_recsys.preprocessing import Encoder, IdMap, build_spec, fit_features
from converge_recsys.sources import InteractionData
from converge_recsys.splits import split as split_rows

TASKS = ("rating", "ranking")
MISSED = 2.0  # target of a relevant item that cannot be ranked (absent from training): counted, never hit
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class EpochBatches(IterableDataset):
    """(user, item, user features, item features, target) batches over whole tensors.

    Training draws each epoch's permutation (and, for ranking, its negatives) from `seed + epoch`,
    so a run is reproducible and every DDP rank agrees; ranks take interleaved batches, as many
    on each (DDP syncs every step). Evaluation reads the rows in order, each on one rank only
    (the core's `ShardSampler`), so a validation metric counts every rating once.
    """

    def __init__(self, rows: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray]],
                 num_rows: int, user_table: torch.Tensor, item_table: torch.Tensor, batch_size: int, train: bool,
                 seed: int, epoch: Callable[[], int]) -> None:
        self.rows, self.num_rows, self.batch_size, self.train, self.seed, self.epoch = (
            rows, num_rows, batch_size, train, seed, epoch)
        self.user_table, self.item_table = user_table, item_table

    def __len__(self) -> int:
        if not self.train:
            return math.ceil(len(self._shard()) / self.batch_size)
        world, _ = world_and_rank()
        return max(1, math.ceil(self.num_rows / self.batch_size) // world)

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng(self.seed + self.epoch())
        users, items, targets = (torch.from_numpy(a) for a in self.rows(rng))
        if self.train:
            order = torch.from_numpy(rng.permutation(len(users)))
            world, rank = world_and_rank()
            picks = [order[start:start + self.batch_size]
                     for start in list(range(0, len(users), self.batch_size))[rank::world][: len(self)]]
        else:
            picks = torch.tensor(self._shard(), dtype=torch.long).split(self.batch_size)
        for pick in picks:
            u, i = users[pick], items[pick]
            yield u, i, self.user_table[u], self.item_table[i], targets[pick]

    def _shard(self) -> list[int]:
        return list(ShardSampler(range(self.num_rows), self.batch_size, world_and_rank()))


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

    def __init__(self, source: Any, task: str = "rating", split: str = "random", val_fraction: float = 0.1,
                 test_fraction: float = 0.1, num_folds: int | None = None, fold: int = 0, split_seed: int = 0,
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
    def _epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    def _rating_rows(self, part: str, train: bool) -> EpochBatches:
        p = self._prepare()
        idx = p["parts"][part]
        fixed = (p["user_idx"][idx], p["item_idx"][idx], p["ratings"][idx].astype(np.float32))
        return EpochBatches(lambda rng: fixed, len(idx), p["user_table"], p["item_table"],
                            self.batch_size if train else self.eval_batch_size, train=train,
                            seed=self.split_seed, epoch=self._epoch if train else lambda: 0)

    def _ranking_train_rows(self) -> EpochBatches:
        p = self._prepare()
        idx = p["parts"]["train"]
        users, items = p["user_idx"][idx], p["item_idx"][idx]
        num_items = p["spec"]["num_items"]
        positives = np.unique(users * num_items + items)
        per = self.negatives

        def rows(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            neg_users = np.repeat(users, per)
            neg_items = sample_unseen(rng, neg_users, positives, num_items)
            return (np.concatenate([users, neg_users]), np.concatenate([items, neg_items]),
                    np.r_[np.ones(len(users), np.float32), np.zeros(len(neg_users), np.float32)])

        return EpochBatches(rows, len(users) * (1 + per), p["user_table"], p["item_table"], self.batch_size,
                            train=True, seed=self.split_seed, epoch=self._epoch)

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

    def _eval(self, part: str):
        if self.task == "rating":
            return self._rating_rows(part, train=False)
        return self.loader(self._ranking_eval_rows(part), train=False)

    def train_dataloader(self):
        rows = self._rating_rows("train", train=True) if self.task == "rating" else self._ranking_train_rows()
        return torch.utils.data.DataLoader(rows, batch_size=None, num_workers=0)

    def val_dataloader(self):
        loader = self._eval("val")
        return torch.utils.data.DataLoader(loader, batch_size=None) if self.task == "rating" else loader

    def test_dataloader(self):
        loader = self._eval("test")
        return torch.utils.data.DataLoader(loader, batch_size=None) if self.task == "rating" else loader


def sample_unseen(rng: np.random.Generator, users: np.ndarray, positives: np.ndarray, num_items: int,
                  rounds: int = 5) -> np.ndarray:
    """One item in 1..num_items-1 per user that the user has no training interaction with (redrawn up to
    `rounds` times; a user who rated nearly everything may keep a rare collision)."""
    items = rng.integers(1, num_items, size=len(users))
    for _ in range(rounds):
        clash = np.flatnonzero(np.isin(users * num_items + items, positives, assume_unique=False))
        if not len(clash):
            break
        items[clash] = rng.integers(1, num_items, size=len(clash))
    return items
