"""The learned item vectors in TensorBoard's embedding projector (PROJECTOR tab), labelled with each
item's title, id and number of training interactions: similar films should sit together, and
colouring by interactions shows whether the rarely rated ones were learned at all."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from converge_recsys.models import Scorer
from converge_recsys.preprocessing import Encoder


def item_metadata(spec: Mapping[str, Any]) -> list[list[str]]:
    """[title, item id, training interactions] per known item, in index order (the unknown item, row 0, left out).
    Tabs and line breaks would break the projector's TSV, so titles lose them."""
    items = spec["items"]
    titles = (spec.get("item_titles") or [""] * (len(items) + 1))[1:]
    rated = [index for user_items in spec["rated"] for index in user_items]
    interactions = np.bincount(np.asarray(rated, dtype=np.int64), minlength=len(items) + 1)[1:]
    return [[" ".join(str(title or item).split()), str(item), str(count)]
            for title, item, count in zip(titles, items, interactions.tolist(), strict=True)]


def log_item_embeddings(writer: Any, net: Scorer, spec: Mapping[str, Any], step: int, tag: str = "items") -> None:
    """Writes the projector files (tensors, metadata TSV, projector_config.pbtxt) under the writer's log dir."""
    features = Encoder(spec).item_table
    device = next(net.parameters()).device
    vectors = net.item_vectors(torch.from_numpy(features).to(device))[1:]
    writer.add_embedding(vectors.detach().float().cpu(), metadata=item_metadata(spec),
                         metadata_header=["title", "item", "interactions"], global_step=step, tag=tag)
