"""Top-K ranking metrics over score matrices: HR@K, NDCG@K and Recall@K per user, averaged over users.

`update(scores, target)`: scores of every (user, item) pair of a batch of users, flat or (users, items);
target (users, items) with 1 = held-out relevant item, 0 = candidate, -1 = excluded (seen in training,
or outside the sampled candidates), 2 = relevant but unrankable (counted as relevant, never a hit).
Users without a relevant item do not count.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

KINDS = ("hr", "ndcg", "recall")


class TopK(Metric):
    full_state_update = False
    higher_is_better = True

    def __init__(self, kind: str, k: int = 10) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"ranking metric must be one of {KINDS}, got {kind!r}")
        self.kind, self.k = kind, k
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("users", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        scores = scores.reshape(target.shape).float().masked_fill((target < 0) | (target > 1), float("-inf"))
        relevant = (target > 0).sum(-1)
        counted = relevant > 0
        k = min(self.k, target.shape[-1])
        top = scores.topk(k, dim=-1).indices
        hits = (target.gather(-1, top) == 1) & torch.isfinite(scores.gather(-1, top))
        if self.kind == "hr":
            value = hits.any(-1).double()
        elif self.kind == "recall":
            value = hits.sum(-1).double() / relevant.clamp(max=k).clamp(min=1)
        else:
            discounts = 1.0 / torch.log2(torch.arange(k, device=scores.device, dtype=torch.float64) + 2.0)
            dcg = (hits.double() * discounts).sum(-1)
            ideal = torch.cumsum(discounts, 0)[(relevant.clamp(min=1, max=k) - 1)]
            value = dcg / ideal
        self.total += value[counted].sum()
        self.users += counted.sum()

    def compute(self) -> torch.Tensor:
        return (self.total / self.users.clamp(min=1)).float()
