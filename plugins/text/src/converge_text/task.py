"""Text classification: token ids in (padded rows, or bags of ids as fastText is served), class logits out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from converge import ConfigError, TaskModule, log_confusion_matrix
from converge_text.models import pad_bags
from converge_text.tokenizer import bags, unpad

TOKEN_WEIGHTINGS = ("none", "idf")
LOSSES = ("cross_entropy", "multi_margin", "squared_hinge")


class TextClassifier(TaskModule):
    """A network from the `net` config over token ids from the data spec's tokenizer.

    `token_weighting: idf` fills the network's per-id `token_weights` buffer (fastText
    has one) with the training split's smoothed inverse document frequencies when
    fitting starts. They live in the weights, not in the spec: one float per id is
    too big for plain JSON, and the exported model then needs nothing but the ids.

    It trains on padded rows. A network with `for_inference()` (fastText) is exported as that module, which
    reads bags of ids instead (flat `token_ids` and per-text `offsets`, no padding): the serving
    state's `token_layout` tells the runtime's preprocessor which layout to feed.
    """

    monitor = "val/acc"
    mode = "max"
    baseline = "class_prior"
    input_names = ("token_ids",)
    output_names = ("logits",)

    def __init__(
        self,
        net: Mapping[str, Any],
        spec: Mapping[str, Any],
        optim: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        token_weighting: str = "none",
        loss: str = "cross_entropy",
    ) -> None:
        super().__init__(spec=spec, optim=optim, scheduler=scheduler, data=data)
        if loss not in LOSSES:
            raise ConfigError(f"model.loss must be one of {LOSSES}, got '{loss}'")
        if token_weighting not in TOKEN_WEIGHTINGS:
            raise ConfigError(f"model.token_weighting must be one of {TOKEN_WEIGHTINGS}, got '{token_weighting}'")
        self.net = instantiate(dict(net), num_ids=spec["num_ids"], num_classes=spec["num_classes"])
        if token_weighting != "none" and not hasattr(self.net, "token_weights"):
            raise ConfigError(f"model.token_weighting={token_weighting} needs a network with token weights "
                              f"(text/fasttext), not {type(self.net).__name__}")
        tokenizer = spec.get("tokenizer", {})
        if getattr(self.net, "reads_word_order", False) and (tokenizer.get("bigram_buckets")
                                                              or tokenizer.get("term_frequency", "raw") != "raw"):
            raise ConfigError(f"{type(self.net).__name__} reads words in order, but the data's tokenizer appends "
                              f"hashed bigrams or makes a bag of ids (fastText style): set "
                              f"data.tokenizer.bigram_buckets=0 data.tokenizer.term_frequency=raw")
        self.label_smoothing, self.token_weighting, self.loss = label_smoothing, token_weighting, loss
        self.serves_bags = hasattr(self.net, "for_inference")

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.net(token_ids)

    def backbone(self) -> torch.nn.Module | None:
        """The pretrained encoder, what fine-tuning strategies freeze or train slower; None for the other networks."""
        return getattr(self.net, "encoder", None)

    def backbone_blocks(self) -> list[torch.nn.Module]:
        """The encoder's blocks, bottom to top (for layer-wise LR decay and unfreezing the top N)."""
        return self.net.blocks() if hasattr(self.net, "blocks") else []

    def serving_state(self) -> dict[str, Any]:
        """The data spec, plus the layout the exported model reads: bags of ids or padded rows."""
        return {**super().serving_state(), "token_layout": "bags" if self.serves_bags else "padded"}

    def export_inputs(self, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        (token_ids,) = inputs
        if not self.serves_bags:
            return {"token_ids": token_ids}
        flat, offsets = bags(unpad(token_ids.cpu().numpy()))
        return {"token_ids": torch.from_numpy(flat), "offsets": torch.from_numpy(offsets)}

    def forward_inputs(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if "offsets" in inputs:  # by the inputs, not the network: a bundle exported before bags was padded
            return (pad_bags(inputs["token_ids"], inputs["offsets"]),)
        return (inputs["token_ids"],)

    def for_export(self) -> torch.nn.Module:
        if self.serves_bags:
            return self.net.for_inference()
        if self.backbone() is not None:  # (a copy of the task) spelled out, attention traces to what onnxruntime fuses
            self.backbone().set_attn_implementation("eager")
        return self

    def onnx_fusions(self) -> dict[str, Any] | None:
        """A pretrained BERT encoder's skip layer-norms and bias-GELUs fused for onnxruntime (its attention too,
        where the exported pattern is one onnxruntime knows)."""
        if self.backbone() is None:
            return None
        config = self.backbone().config
        return {"model_type": "bert", "num_heads": config.num_attention_heads, "hidden_size": config.hidden_size}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        if self.serves_bags:
            return {"token_ids": {0: "ids"}, "offsets": {0: "batch"}}
        return {"token_ids": {0: "batch", 1: "sequence"}}

    def setup(self, stage: str) -> None:
        # Recomputed from the same training split on resume (and on every DDP rank): always the same values.
        if stage == "fit" and self.token_weighting == "idf":
            datamodule = self.trainer.datamodule
            if datamodule is None or not hasattr(datamodule, "document_frequencies"):
                raise ConfigError("model.token_weighting=idf needs the text data module (document frequencies)")
            frequencies, documents = datamodule.document_frequencies()
            self.net.token_weights.copy_(torch.from_numpy(inverse_document_frequency(frequencies, documents)))

    def build_metrics(self) -> MetricCollection:
        classes = self.spec["num_classes"]
        return MetricCollection({
            "acc": MulticlassAccuracy(num_classes=classes, average="micro"),
            "f1": MulticlassF1Score(num_classes=classes, average="macro"),
        })

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss == "multi_margin":  # the multi-class hinge loss of a linear SVM (Weston and Watkins)
            return F.multi_margin_loss(outputs, target)
        if self.loss == "squared_hinge":
            return one_vs_rest_squared_hinge(outputs, target)
        return F.cross_entropy(outputs, target, label_smoothing=self.label_smoothing)

    def log_pictures(self, writer: Any, step: int) -> None:
        log_confusion_matrix(writer, self, self.spec["class_names"], step)


def one_vs_rest_squared_hinge(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """scikit-learn LinearSVC's loss: each class's score is a binary margin, +1 for the true class, -1 for the rest.

    sum over classes of max(0, 1 - sign * score)^2, averaged over the batch. Unlike softmax cross-entropy it
    stops pushing once a document clears the margin, so with L2 weight decay the scores settle on a
    max-margin solution instead of growing the rare n-grams of the training set (measured on R8 in the README).
    """
    sign = 2.0 * F.one_hot(target, outputs.shape[-1]).to(outputs.dtype) - 1.0
    return F.relu(1.0 - sign * outputs).square().sum(dim=-1).mean()


def inverse_document_frequency(frequencies: np.ndarray, documents: int) -> np.ndarray:
    """scikit-learn's smoothed idf, log((1 + n) / (1 + df)) + 1, as float32.

    Ids that never occur in training (padding; the unknown word when every training word is in the
    vocabulary; empty bigram buckets) get 0: their embeddings were never trained, and with the
    largest idf they would otherwise dominate a text with many new words (as scikit-learn ignores them).
    """
    idf = np.log((1.0 + documents) / (1.0 + frequencies.astype(np.float64))) + 1.0
    idf[frequencies == 0] = 0.0
    idf[0] = 0.0
    return idf.astype(np.float32)
