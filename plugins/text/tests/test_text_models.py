"""fastText's inference fold: the one-lookup network export traces must answer as the trained one does."""

from __future__ import annotations

import pytest
import torch

from converge_text.models import FastText, FoldedFastText


@pytest.mark.parametrize("dim", [None, 6])
@pytest.mark.parametrize("pooling", ["l2", "mean"])
def test_folded_fasttext_matches_the_trained_network(dim: int | None, pooling: str) -> None:
    torch.manual_seed(0)
    trained = FastText(num_ids=50, num_classes=4, dim=dim, pooling=pooling).eval()
    with torch.no_grad():
        trained.token_weights[1:] = torch.rand(49) * 8 + 0.5  # idf-like weights, padding stays 0
    # rows of different lengths, one all padding (an empty text); padding may sit anywhere in a row
    token_ids = torch.tensor([[3, 7, 7, 12, 0, 0], [0, 0, 0, 0, 0, 0], [49, 1, 2, 3, 4, 5], [8, 0, 9, 0, 0, 0]])
    folded = trained.for_inference()
    assert isinstance(folded, FoldedFastText)
    with torch.no_grad():
        expected, got = trained(token_ids), folded(token_ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got).all()


def test_folded_table_keeps_the_weight_column_on_the_embeddings_scale() -> None:
    """int8 export stores each table row with one scale: a weight column far larger would swamp the scores."""
    trained = FastText(num_ids=20, num_classes=3, dim=None).eval()
    with torch.no_grad():
        trained.token_weights[1:] = 9.0  # idf of rare words: squared, 81 against embeddings of about 1/3
    table = trained.for_inference().table
    assert table[:, -1].abs().max() == pytest.approx(table[:, :-1].abs().max().item())
