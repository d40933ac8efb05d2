"""The seeded splits every data module uses: sizes, stratification, disjointness."""

from __future__ import annotations

import numpy as np
import pytest

from converge.data.splits import check_folds, stratified_fold, stratified_split, validation_split
from converge.errors import ConfigError

LABELS = np.repeat(np.arange(3), [50, 30, 17])


def test_stratified_split_holds_out_each_class_in_proportion() -> None:
    kept, held = stratified_split(LABELS, 0.2, seed=0)
    assert len(held) == 20 and len(kept) == len(LABELS) - 20
    assert np.intersect1d(kept, held).size == 0
    assert np.bincount(LABELS[held]).tolist() == [10, 6, 4]
    assert np.array_equal(held, stratified_split(LABELS, 0.2, seed=0)[1])  # the seed fixes the members


def test_stratified_folds_partition_the_samples() -> None:
    parts = [stratified_fold(LABELS, 5, fold, seed=3) for fold in range(5)]
    validation = np.concatenate([val for _, val in parts])
    assert sorted(validation.tolist()) == list(range(len(LABELS)))  # every sample validates exactly once
    for train, val in parts:
        assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(LABELS)
        assert np.abs(np.bincount(LABELS[val]) - np.bincount(LABELS) / 5).max() < 1  # stratified


@pytest.mark.parametrize(("num_folds", "fold"), [(1, 0), (5, 5), (5, -1)])
def test_bad_fold_arguments_are_refused(num_folds: int, fold: int) -> None:
    with pytest.raises(ValueError, match="fold"):
        stratified_fold(LABELS, num_folds, fold, seed=0)


def test_validation_split_is_a_fold_when_cross_validating_else_a_fraction() -> None:
    """The one function the vision and text data modules carve validation with."""
    for got, expected in ((validation_split(LABELS, 0.2, None, 0, seed=7), stratified_split(LABELS, 0.2, seed=7)),
                          (validation_split(LABELS, 0.2, 4, 3, seed=7), stratified_fold(LABELS, 4, 3, seed=7))):
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize(("num_folds", "fold"), [(1, 0), (5, 5), (5, -1)])
def test_bad_fold_settings_are_a_config_error(num_folds: int, fold: int) -> None:
    with pytest.raises(ConfigError, match=rf"data.fold={fold} must be in \[0, data.num_folds={num_folds}\)"):
        check_folds(num_folds, fold)
    check_folds(None, fold)  # no cross-validation: the fold is not used


def test_more_folds_than_the_largest_class_has_samples_is_refused() -> None:
    """Each class is dealt round-robin from fold 0: folds past the largest class would validate on nothing."""
    labels = np.repeat([0, 1, 2], [4, 6, 5])
    assert all(len(stratified_fold(labels, 6, fold, seed=0)[1]) for fold in range(6))
    with pytest.raises(ConfigError, match="the largest class has 6 training samples"):
        stratified_fold(labels, 7, 0, seed=0)
