"""Train/validation/test splits of interactions. Validation always comes out of training data, never test.

Three protocols: `random` (fractions of all rows), `kfold` (a partition of all rows
into `num_folds` folds: fold K is the test set, so running every K tests each
rating exactly once) and `leave_last_out` (each user's latest interaction is test,
the one before it validation: the usual top-K protocol).
"""

from __future__ import annotations

import numpy as np

from converge import ConfigError

PROTOCOLS = ("random", "kfold", "leave_last_out")
Split = dict[str, np.ndarray]


def random_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> Split:
    if val_fraction < 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
        raise ConfigError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be "
                          f"non-negative (test > 0) and sum to less than 1")
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:])}


def kfold_split(n: int, num_folds: int, fold: int, val_fraction: float, seed: int) -> Split:
    """Fold `fold` of a seeded partition into `num_folds` near-equal folds is test; validation is
    `val_fraction` of the other folds (seeded by the fold, so it never overlaps test)."""
    if num_folds < 2 or not 0 <= fold < num_folds:
        raise ConfigError(f"data.fold={fold} must be in [0, data.num_folds={num_folds}) and num_folds >= 2")
    folds = np.array_split(np.random.default_rng(seed).permutation(n), num_folds)
    rest = np.concatenate([f for k, f in enumerate(folds) if k != fold])
    rest = np.random.default_rng(seed + 1 + fold).permutation(rest)
    n_val = int(round(val_fraction * len(rest)))
    return {"test": np.sort(folds[fold]), "val": np.sort(rest[:n_val]), "train": np.sort(rest[n_val:])}


def leave_last_out(users: np.ndarray, timestamps: np.ndarray | None, min_interactions: int = 3) -> Split:
    """Per user, by time (file order breaks ties): the last interaction is test, the one before it validation.
    Users with fewer than `min_interactions` keep everything in training."""
    if timestamps is None:
        raise ConfigError("data.split=leave_last_out needs a timestamp column (data.source.timestamp_column)")
    n = len(users)
    order = np.lexsort((np.arange(n), timestamps, users))  # by user, then time, then file order
    sorted_users = users[order]
    ends = np.r_[np.flatnonzero(sorted_users[1:] != sorted_users[:-1]), n - 1]
    starts = np.r_[0, ends[:-1] + 1]
    eligible = (ends - starts + 1) >= min_interactions
    test = order[ends[eligible]]
    val = order[ends[eligible] - 1]
    train = np.setdiff1d(np.arange(n), np.concatenate([test, val]))
    return {"test": np.sort(test), "val": np.sort(val), "train": train}


def split(protocol: str, users: np.ndarray, timestamps: np.ndarray | None, *, val_fraction: float,
          test_fraction: float, num_folds: int | None, fold: int, seed: int) -> Split:
    # num_folds is the cross-validation switch (cv.folds sets it): folds of another protocol would be ignored
    if (num_folds is not None) != (protocol == "kfold"):
        raise ConfigError(f"data.split=kfold goes with data.num_folds (the number of folds); got "
                          f"data.split={protocol} and data.num_folds={num_folds}. For cross-validation: "
                          f"data.split=kfold (e.g. experiment=recsys/ml100k).")
    if protocol == "random":
        return random_split(len(users), val_fraction, test_fraction, seed)
    if protocol == "kfold":
        return kfold_split(len(users), num_folds, fold, val_fraction, seed)
    if protocol == "leave_last_out":
        return leave_last_out(users, timestamps)
    raise ConfigError(f"data.split must be one of {list(PROTOCOLS)}, got {protocol!r}")
