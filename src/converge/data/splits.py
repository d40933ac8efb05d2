"""Reproducible splits. Validation is always carved from training data, never from test."""

from __future__ import annotations

import numpy as np

from converge.errors import ConfigError


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): ceil(fraction * n) samples held out, every class in proportion.

    Each class gives floor(fraction * its size); the few samples left to reach the
    total go to the classes with the largest remainders (ties by label), so the
    sizes match scikit-learn's stratified train_test_split. Members are drawn by
    `seed`: the split is identical on every machine and rank.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    classes, sizes = np.unique(labels, return_counts=True)
    exact = fraction * sizes
    counts = np.floor(exact).astype(int)
    missing = int(np.ceil(fraction * len(labels))) - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:missing]] += 1
    rng = np.random.default_rng(seed)
    held_out = []
    for label, count in zip(classes, counts, strict=True):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        held_out.append(members[:count])
    held = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=int)
    return np.setdiff1d(np.arange(len(labels)), held), held


def stratified_fold(labels: np.ndarray, num_folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of fold `fold` of a stratified `num_folds`-fold partition (cross-validation).

    Every class is shuffled by `seed` and dealt round-robin into the folds, so fold sizes differ by
    at most one per class and the K validation parts are disjoint and cover every sample once.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    labels = np.asarray(labels)
    classes, sizes = np.unique(labels, return_counts=True)
    largest = int(sizes.max(initial=0))
    if num_folds > largest:  # dealt round-robin, the folds past every class's size would validate on nothing
        raise ConfigError(f"data.num_folds={num_folds} (cv.folds): the largest class has {largest} training "
                          f"samples, so folds past {largest} would hold none: use at most {largest} folds")
    rng = np.random.default_rng(seed)
    held_out = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        held_out.append(members[fold::num_folds])
    held = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=int)
    return np.setdiff1d(np.arange(len(labels)), held), held


def check_folds(num_folds: int | None, fold: int) -> None:
    """Refuse a bad `data.num_folds`/`data.fold` pair in the config's words, when the data module is built
    (before any data is read); null num_folds means no cross-validation."""
    if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
        raise ConfigError(f"data.fold={fold} must be in [0, data.num_folds={num_folds}) and data.num_folds "
                          f"at least 2 (or null: validation is data.val_fraction of the training split)")


def validation_split(labels: np.ndarray, val_fraction: float, num_folds: int | None, fold: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of a training split: fold `fold` of a stratified `num_folds`-fold
    partition when cross-validating (num_folds set), else a stratified `val_fraction` of it."""
    if num_folds is None:
        return stratified_split(labels, val_fraction, seed)
    return stratified_fold(labels, num_folds, fold, seed)
