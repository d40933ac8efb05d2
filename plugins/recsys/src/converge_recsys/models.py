"""Scoring networks: (user index, item index[, user features, item features]) -> one score per pair.

Pure tensor functions with a dynamic batch, so the exported model scores any
number of pairs (top-K ranks a user against every item in one call). Index 0 is
the unknown id: its embeddings are padding rows (zero, never trained), so an
unseen user or item is scored from the global mean, the other side's bias and
the side features: the documented fallback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


def _embedding(count: int, dim: int, std: float) -> nn.Embedding:
    table = nn.Embedding(count, dim, padding_idx=0)
    nn.init.normal_(table.weight, 0.0, std)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


def _bias(count: int) -> nn.Embedding:
    table = nn.Embedding(count, 1, padding_idx=0)
    nn.init.zeros_(table.weight)
    return table


class Scorer(nn.Module, ABC):
    """Shared parts: global mean and user/item biases; `penalty` is the L2 term of the rows a batch used."""

    uses_features = False

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        self.num_users, self.num_items = int(spec["num_users"]), int(spec["num_items"])
        self.register_buffer("global_mean", torch.tensor(float(spec.get("global_mean", 0.0))))
        self.user_bias, self.item_bias = _bias(self.num_users), _bias(self.num_items)

    def biases(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.global_mean + self.user_bias(user).squeeze(-1) + self.item_bias(item).squeeze(-1)

    @abstractmethod
    def penalty(self, user: torch.Tensor, item: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        """The L2 penalty of the parameter rows this batch uses."""

    @abstractmethod
    def item_vectors(self, item_features: torch.Tensor) -> torch.Tensor:
        """One learned vector per item index (row 0: the unknown item), given every item's side features:
        what TensorBoard's embedding projector shows."""


class BiasedMF(Scorer):
    """Biased matrix factorisation: mean + b_u + b_i + <p_u, q_i> (Koren, Bell and Volinsky 2009)."""

    def __init__(self, spec: Mapping[str, Any], dim: int = 64, init_std: float = 0.01) -> None:
        super().__init__(spec)
        self.users, self.items = _embedding(self.num_users, dim, init_std), _embedding(self.num_items, dim, init_std)

    def forward(self, user: torch.Tensor, item: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        return self.biases(user, item) + (self.users(user) * self.items(item)).sum(-1)

    def item_vectors(self, item_features: torch.Tensor) -> torch.Tensor:
        return self.items.weight

    def penalty(self, user: torch.Tensor, item: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        terms = (self.users(user).pow(2).sum(-1) + self.items(item).pow(2).sum(-1)
                 + self.user_bias(user).squeeze(-1).pow(2) + self.item_bias(item).squeeze(-1).pow(2))
        return terms.mean()


class NCF(Scorer):
    """Neural collaborative filtering (He et al. 2017): a GMF branch (elementwise product of embeddings) and an
    MLP branch over concatenated embeddings, fused by a linear layer; plus mean and biases for ratings."""

    def __init__(self, spec: Mapping[str, Any], dim: int = 32, mlp_dim: int = 32, hidden: Sequence[int] = (64, 32, 16),
                 dropout: float = 0.0, init_std: float = 0.01) -> None:
        super().__init__(spec)
        self.gmf_users, self.gmf_items = (_embedding(self.num_users, dim, init_std),
                                          _embedding(self.num_items, dim, init_std))
        self.mlp_users, self.mlp_items = (_embedding(self.num_users, mlp_dim, init_std),
                                          _embedding(self.num_items, mlp_dim, init_std))
        layers: list[nn.Module] = []
        width = 2 * mlp_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.mlp = nn.Sequential(*layers)
        self.fuse = nn.Linear(dim + width, 1)

    def forward(self, user: torch.Tensor, item: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        gmf = self.gmf_users(user) * self.gmf_items(item)
        mlp = self.mlp(torch.cat([self.mlp_users(user), self.mlp_items(item)], dim=-1))
        return self.biases(user, item) + self.fuse(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    def item_vectors(self, item_features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.gmf_items.weight, self.mlp_items.weight], dim=-1)

    def penalty(self, user: torch.Tensor, item: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        rows = [self.gmf_users(user), self.gmf_items(item), self.mlp_users(user), self.mlp_items(item)]
        return sum(r.pow(2).sum(-1) for r in rows).mean() + (self.user_bias(user).pow(2)
                                                              + self.item_bias(item).pow(2)).mean()


class FeatureMF(Scorer):
    """Biased MF whose user and item vectors (and biases) add a linear map of their side features
    (SVDFeature, Chen et al. 2012): a user with few ratings borrows from users of the same age, gender and
    occupation, a rarely rated film from films of its genres and decade; a new one gets those parts alone."""

    uses_features = True

    def __init__(self, spec: Mapping[str, Any], dim: int = 64, init_std: float = 0.01) -> None:
        super().__init__(spec)
        user_dim, item_dim = int(spec["user_features"].get("dim", 0)), int(spec["item_features"].get("dim", 0))
        self.users, self.items = _embedding(self.num_users, dim, init_std), _embedding(self.num_items, dim, init_std)
        self.user_map = nn.Linear(user_dim, dim + 1, bias=False)  # column 0: the feature bias
        self.item_map = nn.Linear(item_dim, dim + 1, bias=False)
        for layer in (self.user_map, self.item_map):
            nn.init.normal_(layer.weight, 0.0, init_std)

    def vectors(self, user: torch.Tensor, item: torch.Tensor, user_features: torch.Tensor,
                item_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        user_side, item_side = self.user_map(user_features), self.item_map(item_features)
        p = self.users(user) + user_side[..., 1:]
        q = self.items(item) + item_side[..., 1:]
        return p, q, user_side[..., 0] + item_side[..., 0]

    def forward(self, user: torch.Tensor, item: torch.Tensor, user_features: torch.Tensor,
                item_features: torch.Tensor) -> torch.Tensor:
        p, q, side_bias = self.vectors(user, item, user_features, item_features)
        return self.biases(user, item) + side_bias + (p * q).sum(-1)

    def item_vectors(self, item_features: torch.Tensor) -> torch.Tensor:
        return self.items.weight + self.item_map(item_features)[:, 1:]  # the q of `vectors`, for every item

    def penalty(self, user: torch.Tensor, item: torch.Tensor, user_features: torch.Tensor,
                item_features: torch.Tensor) -> torch.Tensor:
        p, q, side_bias = self.vectors(user, item, user_features, item_features)
        terms = (p.pow(2).sum(-1) + q.pow(2).sum(-1) + side_bias.pow(2)
                 + self.user_bias(user).squeeze(-1).pow(2) + self.item_bias(item).squeeze(-1).pow(2))
        return terms.mean()
