"""fastText's inference fold over bags of ids: the network export traces must answer as the trained one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from converge_text.models import FastText, FoldedFastText, pad_bags
from converge_text.tokenizer import bags, unpad

# Rows of different lengths, right-padded as the tokenizer pads them; empty texts first, inside and last.
PADDED = torch.tensor([[0, 0, 0, 0, 0, 0], [3, 7, 7, 12, 0, 0], [0, 0, 0, 0, 0, 0], [49, 1, 2, 3, 4, 5],
                       [8, 9, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])


def as_bags(padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat, offsets = bags(unpad(padded.numpy()))
    return torch.from_numpy(flat), torch.from_numpy(offsets)


@pytest.mark.parametrize("dim", [None, 6])
@pytest.mark.parametrize("pooling", ["l2", "mean"])
def test_folded_fasttext_on_bags_matches_the_trained_network_on_padded_rows(dim: int | None, pooling: str) -> None:
    torch.manual_seed(0)
    trained = FastText(num_ids=50, num_classes=4, dim=dim, pooling=pooling).eval()
    with torch.no_grad():
        trained.token_weights[1:] = torch.rand(49) * 8 + 0.5  # idf-like weights, padding stays 0
    folded = trained.for_inference()
    assert isinstance(folded, FoldedFastText)
    with torch.no_grad():
        expected, got = trained(PADDED), folded(*as_bags(PADDED))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[0], got[2])  # every empty text gets the prior, wherever it sits


def test_bags_and_padded_rows_convert_both_ways() -> None:
    flat, offsets = as_bags(PADDED)
    assert flat.tolist() == [3, 7, 7, 12, 49, 1, 2, 3, 4, 5, 8, 9]
    assert offsets.tolist() == [0, 0, 4, 4, 10, 12]
    assert torch.equal(pad_bags(flat, offsets), PADDED)
    empty = as_bags(torch.zeros(3, 4, dtype=torch.int64))
    assert empty[0].numel() == 0 and torch.equal(pad_bags(*empty), torch.zeros(3, 1, dtype=torch.int64))
    assert np.array_equal(bags([])[1], np.empty(0, np.int64))


def test_folded_table_keeps_the_weight_column_on_the_embeddings_scale() -> None:
    """int8 export stores each table row with one scale: a weight column far larger would swamp the scores."""
    trained = FastText(num_ids=20, num_classes=3, dim=None).eval()
    with torch.no_grad():
        trained.token_weights[1:] = 9.0  # idf of rare words: squared, 81 against embeddings of about 1/3
    table = trained.for_inference().table
    assert table[:, -1].abs().max() == pytest.approx(table[:, :-1].abs().max().item())
