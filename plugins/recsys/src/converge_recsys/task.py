"""Recommendation tasks: rating prediction (RMSE, MAE) and top-K ranking (HR, NDCG, Recall at 10).

Both score (user, item[, features]) pairs with the network from the `net` config;
`forward` is that pure tensor function, which is what export traces. Ranking
evaluates a batch of users against every item: the batch arrives as (users, items)
matrices that `split_batch` flattens into pairs, and the metrics reshape the scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from converge import ConfigError, TaskModule
from converge_recsys.metrics import TopK
from converge_recsys.pictures import log_item_embeddings

PAIR_INPUTS = ("user", "item")
FEATURE_INPUTS = ("user", "item", "user_features", "item_features")


class Recommender(TaskModule):
    """Shared by both tasks: the network, its inputs, and an L2 penalty on the rows each batch uses
    (per-row regularisation, as in classic MF: weight decay on the whole table would shrink rows
    that were not in the batch)."""

    task_kind = ""

    def __init__(self, net: Mapping[str, Any], spec: Mapping[str, Any], optim: Mapping[str, Any],
                 scheduler: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                 l2: float = 0.0) -> None:
        if spec.get("kind") != self.task_kind:
            raise ConfigError(f"model {type(self).__name__} needs data with task={self.task_kind!r}, "
                              f"but the data config has task={spec.get('kind')!r} (set data.task)")
        super().__init__(spec=spec, optim=optim, scheduler=scheduler, data=data)
        self.net = instantiate(dict(net), _partial_=True)(spec=spec)  # never the spec through OmegaConf (slow)
        self.l2 = float(l2)
        self.input_names = FEATURE_INPUTS if self.net.uses_features else PAIR_INPUTS

    def serving_state(self) -> dict[str, Any]:
        """The data spec, plus the inputs the exported network reads (pairs, or pairs with features)."""
        return {**super().serving_state(), "model_inputs": list(self.input_names)}

    def split_batch(self, batch: Sequence[torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        user, item, user_features, item_features, target = batch
        inputs = (user, item, user_features, item_features)[: len(self.input_names)]
        if user.dim() == 2:  # ranking evaluation: (users, items) matrices -> one row per pair
            inputs = tuple(t.reshape(-1, *t.shape[2:]) for t in inputs)
        return inputs, target

    def scores(self, user: torch.Tensor, item: torch.Tensor, user_features: torch.Tensor | None = None,
               item_features: torch.Tensor | None = None) -> torch.Tensor:
        """The network's raw scores (the features are passed only to a network that uses them)."""
        if user_features is None:
            return self.net(user, item)
        return self.net(user, item, user_features, item_features)

    def regularization(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor | float:
        return self.l2 * self.net.penalty(*inputs) if self.l2 else 0.0

    def log_final_pictures(self, writer: Any, step: int) -> None:
        log_item_embeddings(writer, self.net, self.spec, step)


class RatingPrediction(Recommender):
    """Explicit ratings. Predictions are clipped to the rating scale outside training (a free gain in RMSE)."""

    monitor = "val/rmse"
    mode = "min"
    baseline = "mean"
    task_kind = "rating"

    def forward(self, user: torch.Tensor, item: torch.Tensor, user_features: torch.Tensor | None = None,
                item_features: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.scores(user, item, user_features, item_features)
        if self.training:
            return scores
        low, high = self.spec["rating_scale"]
        return scores.clamp(float(low), float(high))

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError()})

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, target)


class TopKRanking(Recommender):
    """Implicit feedback: a logit per pair, trained with binary cross-entropy on positives and sampled
    negatives; evaluated by ranking (full or sampled, per the data config) with HR/NDCG/Recall@10."""

    monitor = "val/ndcg10"
    mode = "max"
    task_kind = "ranking"
    k = 10

    def forward(self, user: torch.Tensor, item: torch.Tensor, user_features: torch.Tensor | None = None,
                item_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.scores(user, item, user_features, item_features)

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({f"{kind}{self.k}": TopK(kind, self.k) for kind in ("hr", "ndcg", "recall")})

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.reshape(-1)
        counted = (target >= 0) & (target <= 1)
        return F.binary_cross_entropy_with_logits(outputs[counted], target[counted])


def recommender(net: Mapping[str, Any], spec: Mapping[str, Any], optim: Mapping[str, Any],
                scheduler: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                l2: float = 0.0) -> Recommender:
    """The task the data asks for (`data.task`: rating or ranking), so one model config serves both."""
    return task_class(spec.get("kind"))(net=net, spec=spec, optim=optim, scheduler=scheduler, data=data, l2=l2)


def task_class(kind: str | None) -> type[Recommender]:
    task = {"rating": RatingPrediction, "ranking": TopKRanking}.get(kind)
    if task is None:
        raise ConfigError(f"data has task {kind!r}; expected rating or ranking")
    return task


# What converge reads the task's own monitor from, before anything is built (the data config's `task`).
recommender.task_class = lambda data: task_class(data.get("task", "rating"))
