"""The recsys plugin's TensorBoard view: the learned item vectors in the embedding projector, with titles,
from a real run on a slice of MovieLens 100k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from converge.testing import build_datamodule, compose, train_run
from converge_recsys.models import FeatureMF
from converge_recsys.preprocessing import Encoder


def test_projector_shows_the_final_item_vectors_with_titles(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train_run(["data=recsys/ml100k", "model=recsys/mf", "data.max_users=80", "trainer.max_epochs=2",
               "~callbacks.progress_bar", "~callbacks.model_summary"], run_dir)
    board = run_dir / "tensorboard"
    config = (board / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 1, "drawn once, when fitting ends"
    tensors = np.loadtxt(board / config.split('tensor_path: "')[1].split('"')[0], delimiter="\t")
    metadata = [line.split("\t") for line in
                (board / config.split('metadata_path: "')[1].split('"')[0]).read_text().splitlines()]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    spec = state["hyper_parameters"]["spec"]
    assert np.allclose(tensors, state["state_dict"]["net.items.weight"][1:].numpy(), atol=1e-6)
    assert metadata[0] == ["title", "item", "interactions"]
    assert [row[1] for row in metadata[1:]] == spec["items"]
    assert [row[0] for row in metadata[1:]] == spec["item_titles"][1:]  # MovieLens titles have no tabs
    assert sum(int(row[2]) for row in metadata[1:]) == sum(len(rated) for rated in spec["rated"])


def test_feature_mf_item_vectors_are_the_vectors_it_scores_with() -> None:
    spec = build_datamodule(compose(["data=recsys/ml100k", "data.max_users=20", "model=recsys/feature_mf"]).data).spec()
    assert spec["item_features"]["dim"] > 0  # genres and release decade
    net = FeatureMF(spec, dim=8, init_std=0.1)
    table = torch.from_numpy(Encoder(spec).item_table)
    items = torch.arange(1, spec["num_items"])
    users = torch.ones_like(items)
    user_features = torch.zeros(len(items), spec["user_features"]["dim"])
    with torch.no_grad():
        _, q, _ = net.vectors(users, items, user_features, table[items])
        torch.testing.assert_close(net.item_vectors(table)[items], q)
