"""Networks over padded token ids. Each maps int64 ids (batch, sequence), 0 = padding, to logits (batch, classes).

All three are export-safe: tensor operations only, no Python branches on data,
any batch size and sequence length (an all-padding row, from an empty text,
gives finite logits). Each takes (num_ids, num_classes) from the data spec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from converge_text.tokenizer import PAD_ID


def _token_mask(token_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, sequence, 1): 1.0 for a real token, 0.0 for padding."""
    return (token_ids != PAD_ID).unsqueeze(-1).to(dtype)


class FastText(nn.Module):
    """fastText (Joulin et al., 2017): the average of word and hashed-bigram embeddings, then a linear layer.

    An `nn.Embedding` and a weighted sum rather than an offsets-based `nn.EmbeddingBag`:
    it takes the same padded (batch, sequence) ids as the other models, and exports to
    ONNX, TorchScript and torch.export as a plain Gather + ReduceSum (EmbeddingBag's
    offsets input has no clean ONNX equivalent and would need its own input format).

    Each token is weighted by a per-id `token_weights` buffer (all ones unless set;
    the task fills it with the training split's inverse document frequencies when
    asked). Padding weighs 0 in it, so the weights are the padding mask too: the exported
    forward is two Gathers, two MatMuls and the normalisation, nothing per token besides.
    The weighted sum is divided by the weights' L2 norm (`pooling: l2`, the length
    normalisation of tf-idf vectors) or their sum (`pooling: mean`, the original).
    During training, `token_dropout` hides each token with that probability.

    `dim: null` drops the hidden layer: each id's embedding row holds its class scores
    (num_classes wide) and the pooled row plus a bias are the logits. That is a linear model
    over the tf-idf bag of n-grams, a linear SVM's model; its export gathers num_classes
    floats per token instead of dim, and has no Gemm.

    `sparse: true` gives the embedding table sparse gradients: a step then touches only the
    rows of the batch's n-grams, not all of them, which is what makes millions of bigram
    buckets affordable on a CPU. It needs an optimiser that accepts sparse gradients
    (`torch.optim.Adagrad` or `SGD` without weight decay; Adam(W) refuses them).
    """

    def __init__(self, num_ids: int, num_classes: int, dim: int | None = 64, pooling: str = "l2",
                 dropout: float = 0.0, token_dropout: float = 0.0, sparse: bool = False) -> None:
        super().__init__()
        if pooling not in ("mean", "l2"):
            raise ValueError(f"pooling must be 'mean' or 'l2', got {pooling!r}")
        width = num_classes if dim is None else dim
        self.embedding = nn.Embedding(num_ids, width, padding_idx=PAD_ID, sparse=sparse)
        nn.init.uniform_(self.embedding.weight, -1.0 / width, 1.0 / width)
        with torch.no_grad():
            self.embedding.weight[PAD_ID].zero_()
        token_weights = torch.ones(num_ids)
        token_weights[PAD_ID] = 0.0
        self.register_buffer("token_weights", token_weights)
        self.pooling, self.token_dropout = pooling, token_dropout
        self.dropout = nn.Dropout(dropout)
        # the linear model's bias is a plain parameter: a Linear(num_classes, num_classes) would add a useless matrix
        self.head = nn.Linear(width, num_classes) if dim is not None else None
        self.bias = nn.Parameter(torch.zeros(num_classes)) if dim is None else None

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        weights = F.embedding(token_ids, self.token_weights.unsqueeze(1))  # (batch, sequence, 1), one Gather
        if self.training and self.token_dropout > 0:
            weights = weights * (torch.rand_like(weights) >= self.token_dropout).to(weights.dtype)
        # Weighted sums as batched matrix products (batch, 1, sequence) @ (batch, sequence, width): onnxruntime runs
        # MatMul as one batched GEMM, where a broadcast Mul + ReduceSum (and a Pow for the squares) took 3.5x longer.
        row = weights.transpose(1, 2)
        summed = (row @ self.embedding(token_ids)).squeeze(1)
        norm = (row @ weights).squeeze(1).sqrt() if self.pooling == "l2" else weights.sum(dim=1)
        pooled = self.dropout(summed / norm.clamp_min(1e-6))
        return pooled + self.bias if self.head is None else self.head(pooled)

    def for_inference(self) -> FoldedFastText:
        """The same function over bags of ids, with the weights folded into the table: what export traces."""
        return FoldedFastText(self)


class FoldedFastText(nn.Module):
    """An eval-mode FastText over bags of ids, with one lookup per id instead of two lookups and two weighted sums.

    Row i of the folded table is (w_i * e_i, w_i^2 / c) for l2 pooling or (w_i * e_i, w_i / c) for mean
    pooling, so a plain sum over a bag gives the weighted sum of embeddings and (up to the constant c) the
    norm's argument at once. In onnxruntime a Gather costs about the same per id whether a row holds 1 float
    or 9, and the matmuls go. It reads bags (flat ids plus offsets, `tokenizer.bags`), not padded rows: a
    padded batch of 64 R8 stories is 76-86% padding, and the graph (Gather, then ScatterND(add) per bag) took
    0.13 ms a batch where Gather + ReduceSum over the padded batch took 0.41 (one thread).
    c brings the weight column to the embedding columns' magnitude, because int8 export stores each table
    row with one scale: a weight column hundreds of times larger would leave the class scores no precision.
    """

    def __init__(self, trained: FastText) -> None:
        super().__init__()
        weights = trained.token_weights.unsqueeze(1)
        weighted = trained.embedding.weight.detach() * weights
        weight_column = weights.square() if trained.pooling == "l2" else weights
        self.scale = float(weight_column.abs().max() / weighted.abs().max().clamp_min(1e-12)) or 1.0
        self.table = nn.Parameter(torch.cat([weighted, weight_column / self.scale], dim=1), requires_grad=False)
        self.pooling, self.head, self.bias = trained.pooling, trained.head, trained.bias

    def forward(self, token_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        totals = bag_sums(F.embedding(token_ids, self.table), offsets)
        summed, weight = totals[:, :-1], totals[:, -1:] * self.scale
        norm = weight.sqrt() if self.pooling == "l2" else weight
        pooled = summed / norm.clamp_min(1e-6)
        return pooled + self.bias if self.head is None else self.head(pooled)


def bag_sums(rows: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(bags, width) sums of (ids, width) rows, bag b being rows offsets[b] up to the next offset.

    Each row's bag number is a running count of the bag starts up to it; an empty bag repeats its offset,
    so its start counts twice and no row lands in it (it sums to zero). Exports as ScatterND(add) and CumSum.
    """
    starts = torch.zeros(rows.shape[0] + 1, dtype=offsets.dtype, device=rows.device)
    bag = starts.index_add(0, offsets, torch.ones_like(offsets))[:-1].cumsum(0) - 1
    return torch.zeros(offsets.shape[0], rows.shape[1], dtype=rows.dtype, device=rows.device).index_add(0, bag, rows)


def pad_bags(token_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Bags of ids (flat ids, offsets) as right-padded rows (bags, longest): the layout the networks train on."""
    lengths = torch.diff(offsets, append=offsets.new_tensor([token_ids.shape[0]]))
    bag = torch.repeat_interleave(torch.arange(offsets.shape[0], device=offsets.device), lengths)
    width = max(int(lengths.max()), 1) if offsets.numel() else 1  # an all-empty batch is one padding column
    padded = token_ids.new_full((offsets.shape[0], width), PAD_ID)
    padded[bag, torch.arange(token_ids.shape[0], device=token_ids.device) - offsets[bag]] = token_ids
    return padded


class KimCNN(nn.Module):
    """Kim (2014): word embeddings, parallel 1-D convolutions of several widths, max-over-time pooling.

    Each convolution is zero-padded by `width - 1` on both sides (a text shorter than a
    filter still has windows) and has no bias, so a window of padding alone (whose
    embeddings are the zero padding row) scores exactly 0 after the ReLU, the smallest
    possible value: padding never wins the max, extra padding never changes the answer,
    and an all-padding row pools to zeros. The feature maps are right-padded with zeros
    (harmless for the same reason) to one length and pooled by a single max: onnxruntime's
    shape inference, which int8 quantization runs first, loses the shape of a ReduceMax
    output, so nothing may need it before the final Gemm.
    """

    reads_word_order = True  # needs ids in text order: no hashed bigrams appended, not a bag

    def __init__(self, num_ids: int, num_classes: int, dim: int = 128, widths: Sequence[int] = (3, 4, 5),
                 filters: int = 100, dropout: float = 0.5) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_ids, dim, padding_idx=PAD_ID)
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, width, padding=width - 1, bias=False) for width in widths)
        self.widest = max(widths)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(filters * len(widths), num_classes)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(token_ids).transpose(1, 2)  # (batch, dim, sequence)
        # each map is (batch, filters, sequence + width - 1): right-pad all to sequence + widest - 1
        maps = [F.pad(F.relu(conv(embedded)), (0, self.widest - conv.kernel_size[0])) for conv in self.convs]
        return self.head(self.dropout(torch.cat(maps, dim=1).amax(dim=-1)))


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(length, dim) fixed positional encodings (Vaswani et al.), computed for any length: nothing to outgrow."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = position * frequency
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :dim].to(dtype)


class EncoderBlock(nn.Module):
    """One pre-norm Transformer encoder layer, written out in plain tensor operations.

    Not `nn.TransformerEncoderLayer`: in eval mode that one may switch to a fused
    kernel with nested tensors, which the exporters do not all handle; these few
    lines export the same way everywhere.
    """

    def __init__(self, dim: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, 1.0 / math.sqrt(dim // heads)
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.feedforward_norm = nn.LayerNorm(dim)
        self.feedforward = nn.Sequential(nn.Linear(dim, feedforward), nn.GELU(), nn.Dropout(dropout),
                                         nn.Linear(feedforward, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        batch, length, dim = hidden.shape
        q, k, v = self.qkv(self.attention_norm(hidden)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * self.scale + key_bias  # (batch, heads, len, len)
        attended = (self.dropout(scores.softmax(dim=-1)) @ v).transpose(1, 2).reshape(batch, length, dim)
        hidden = hidden + self.dropout(self.out(attended))
        return hidden + self.dropout(self.feedforward(self.feedforward_norm(hidden)))


class TransformerClassifier(nn.Module):
    """A small pre-norm Transformer encoder trained from scratch, then a masked mean over tokens.

    Padding is hidden from attention by an additive bias of -1e4 rather than -inf:
    an all-padding row (an empty text) then attends uniformly instead of producing NaN.
    Positions are sinusoidal, computed for the actual length, so no length is too long.
    """

    reads_word_order = True  # needs ids in text order: no hashed bigrams appended, not a bag

    def __init__(self, num_ids: int, num_classes: int, dim: int = 128, heads: int = 4, layers: int = 2,
                 feedforward: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.embedding = nn.Embedding(num_ids, dim, padding_idx=PAD_ID)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, feedforward, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(token_ids) * math.sqrt(self.embedding.embedding_dim)
        hidden = embedded + sinusoidal_positions(token_ids.shape[1], embedded.shape[-1], embedded.device,
                                                 embedded.dtype)
        hidden = self.dropout(hidden)
        mask = _token_mask(token_ids, hidden.dtype)  # (batch, sequence, 1)
        key_bias = ((1.0 - mask) * -1e4).transpose(1, 2).unsqueeze(1)  # (batch, 1, 1, sequence)
        for block in self.blocks:
            hidden = block(hidden, key_bias)
        hidden = self.norm(hidden)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.head(pooled)
