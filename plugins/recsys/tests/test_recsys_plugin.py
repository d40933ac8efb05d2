"""The recsys plugin: conformance on a real slice of MovieLens 100k, and its data handling, checked for real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from converge import ConfigError, DataError
from converge.testing import PluginConformance, build_datamodule, compose, predict, run_cli
from converge_recsys.interactions import read_interactions
from converge_recsys.metrics import TopK
from converge_recsys.models import NCF, BiasedMF, FeatureMF
from converge_recsys.preprocessing import UNKNOWN, Encoder
from converge_recsys.splits import kfold_split, leave_last_out, random_split

SLICE = ["data.max_users=80"]  # the first 80 users of ml-100k: ~8k real ratings
WORLD = "converge.data.sampling.world_and_rank"  # faked to see what each rank of a DDP world reads


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class TestRatingMF(PluginConformance):
    overrides = ["data=recsys/ml100k", "model=recsys/mf", *SLICE]

    def predict_inputs(self, folder: Path) -> list[str]:
        return [str(_write(folder / "pair.csv", "user_id,item_id\n1,50\n99999,50\n")),
                str(_write(folder / "recommend.csv", "user_id\n1\n"))]

    def empty_predict_input(self, folder: Path) -> str:
        return str(_write(folder / "no_rows.csv", "user_id,item_id\n"))

    def serve_instances(self, folder: Path) -> list[tuple[dict, list[str]]]:
        return [({"user": "1", "item": 50}, [str(_write(folder / "pair.csv", "user_id,item_id\n1,50\n"))]),
                ({"user": 99999, "item": "50"}, [str(_write(folder / "new.csv", "user_id,item_id\n99999,50\n"))]),
                ({"user": 1, "k": 3}, ["--user", "1", "--top-k", "3"]), ({"user": "2"}, ["--user", "2"])]

    def test_predict_answers_each_row_and_each_user(self, bundle: Path, tmp_path: Path) -> None:
        queries = _write(tmp_path / "queries.csv", "user_id,item_id\n1,50\n\n2,\n")
        output = tmp_path / "answers.jsonl"
        assert predict([str(bundle), str(queries), "--user", "1", "--top-k", "3", "--output", str(output)]) == 0
        answers = [json.loads(line) for line in output.read_text().splitlines()]
        assert [answer["input"] for answer in answers] == ["--user 1", f"{queries}:2", f"{queries}:4"]
        assert answers[1]["user"] == "1" and answers[1]["item"] == "50" and 1.0 <= answers[1]["score"] <= 5.0
        assert [len(answer["recommendations"]) for answer in (answers[0], answers[2])] == [3, 3]
        assert answers[0]["recommendations"][0]["title"]

    def test_predict_refuses_no_queries_and_a_top_k_below_one(self, bundle: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
        output = tmp_path / "answers.jsonl"
        assert predict([str(bundle), "--output", str(output)]) == 2  # a DataError: one message, code 2
        assert "converge: error: no queries: give a CSV of queries" in capsys.readouterr().err
        assert not output.exists() and not list(tmp_path.iterdir())  # nothing half-written
        with pytest.raises(SystemExit) as refused:  # argparse's usage error, before the bundle is run
            predict([str(bundle), "--user", "1", "--top-k", "0"])
        assert refused.value.code == 2
        assert "argument --top-k: must be at least 1, got 0" in capsys.readouterr().err


    def test_served_pairs_are_logged_as_interactions_recsys_csv_reads(self, bundle: Path, tmp_path: Path) -> None:
        import httpx

        from converge.testing import served

        body = {"instances": [{"user": "1", "item": "50"}, {"user": 2, "k": 3}, {"user": "new", "item": 50}]}
        with served([f"movies={bundle}"], "--log-requests", str(tmp_path), "--log-sample", "1") as server:
            answers = httpx.post(f"{server.url}/v1/models/movies/predict", json=body).json()["answers"]
            assert server.stop()[0] == 0
        logged = read_interactions(tmp_path / "movies" / "requests.csv", rating_column="score", out_of_scale="clip")
        assert len(logged) == 2  # the scored pairs; a top-k request is no interaction
        assert list(logged.users) == ["1", "new"] and list(logged.items) == ["50", "50"]
        assert np.allclose(logged.ratings, np.clip([answers[0]["score"], answers[2]["score"]], 1, 5), atol=1e-5)

    def test_drift_flags_new_users_and_not_held_out_pairs(self, bundle: Path, tmp_path: Path) -> None:
        """The test split's (user, item) pairs are the training distribution; the same pairs from users never
        seen are not (unknown users: a drift of `unknown_user`)."""
        data = build_datamodule(compose(self.overrides).data)
        data.setup("test")
        spec = data.spec()
        raw = {"user": ["", *spec["users"]], "item": ["", *spec["items"]]}  # index 0: unknown to training
        pairs = [(raw["user"][u] or f"unseen{n}", raw["item"][i] or f"unseen{n}")
                 for batch in data.test_dataloader() for n, (u, i) in enumerate(zip(batch[0].tolist(),
                                                                                  batch[1].tolist(), strict=True))]
        held = _write(tmp_path / "held.csv", "user_id,item_id\n" + "".join(f"{u},{i}\n" for u, i in pairs))
        new = _write(tmp_path / "new.csv", "user_id,item_id\n" + "".join(f"new{n},{i}\n"
                                                                          for n, (_, i) in enumerate(pairs)))
        reports = {}
        for name, path in (("held", held), ("new", new)):
            done = run_cli(["drift", str(bundle), str(path)])
            assert done.returncode == 0, done.stderr
            reports[name] = json.loads(done.stdout)
        assert not reports["held"]["drift"], reports["held"]
        assert reports["new"]["statistics"]["unknown_user"]["drift"], reports["new"]


class TestRankingFeatures(PluginConformance):
    overrides = ["data=recsys/ml100k_ranking", "model=recsys/feature_mf", *SLICE]

    def predict_inputs(self, folder: Path) -> list[str]:
        return [str(_write(folder / "recommend.csv", "user_id\n2\n"))]

    def serve_instances(self, folder: Path) -> list[tuple[dict, list[str]]]:
        return [({"user": "2", "k": 5}, ["--user", "2", "--top-k", "5"])]


def test_kfold_is_a_partition_and_validation_avoids_test() -> None:
    n, tests = 1003, []
    for fold in range(5):
        parts = kfold_split(n, 5, fold, val_fraction=0.1, seed=0)
        assert not set(parts["val"]) & set(parts["test"]) and not set(parts["train"]) & set(parts["test"])
        assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == n
        tests.append(parts["test"])
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(n))  # each row tested exactly once
    sizes = {k: len(v) for k, v in random_split(1000, 0.1, 0.1, seed=0).items()}
    assert sizes == {"train": 800, "val": 100, "test": 100}


def test_leave_last_out_takes_each_users_latest() -> None:
    users = np.array(["a", "a", "a", "b", "b", "b", "b", "c"])
    times = np.array([5.0, 1.0, 3.0, 2.0, 9.0, 4.0, 9.0, 1.0])
    parts = leave_last_out(users, times)
    assert parts["test"].tolist() == [0, 6]  # a's time 5; b's tie at 9 goes to the later row
    assert parts["val"].tolist() == [2, 4]
    assert parts["train"].tolist() == [1, 3, 5, 7]  # c has one interaction: training only


def test_bad_interaction_files_name_the_file(tmp_path: Path) -> None:
    header = "user_id,item_id,rating,timestamp\n"
    cases = {
        "scale.csv": (header + "1,10,4,1\n2,10,7,2\n", "scale.csv:3: rating 7 is outside the declared scale"),
        "dupes.csv": (header + "1,10,4,1\n1,10,5,2\n", "dupes.csv: user '1' and item '10' occur on lines 2, 3"),
        "columns.csv": ("user,item_id,rating,timestamp\n1,10,4,1\n", "columns.csv: missing id column(s) ['user_id']"),
        "types.csv": (header + "1,x9,4,1\n", "types.csv:2: item id 'x9' in column 'item_id' is not an integer"),
        "number.csv": (header + "1,9,good,1\n", "number.csv:2: rating 'good' in column 'rating' is not a number"),
        "fields.csv": (header + "1,9,4\n", "fields.csv:2: 3 fields, the header has 4"),
    }
    for name, (text, message) in cases.items():
        with pytest.raises(DataError, match=re.escape(message)):
            read_interactions(_write(tmp_path / name, text), id_type="int")
    clipped = read_interactions(tmp_path / "scale.csv", out_of_scale="clip")
    assert clipped.ratings.tolist() == [4.0, 5.0]
    assert len(read_interactions(tmp_path / "scale.csv", out_of_scale="drop")) == 1
    merged = read_interactions(tmp_path / "dupes.csv", duplicates="mean")
    assert merged.ratings.tolist() == [4.5] and len(merged) == 1
    assert read_interactions(tmp_path / "dupes.csv", duplicates="last").ratings.tolist() == [5.0]
    with pytest.raises(ConfigError, match="duplicates must be one of"):
        read_interactions(tmp_path / "dupes.csv", duplicates="sum")


def test_bad_csv_is_one_clear_cli_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.csv", "user_id,item_id,rating,timestamp\n1,10,4,1\n2,10,9,2\n")
    run_dir = tmp_path / "run"
    done = run_cli(["train", "data=recsys/csv", f"data.source.path={path}", "model=recsys/mf",
                    f"hydra.run.dir={run_dir}"])
    assert done.returncode == 2
    assert "mine.csv:3: rating 9 is outside the declared scale [1, 5]" in done.stderr
    assert "Traceback" not in done.stderr and not run_dir.exists()


def _spec(unknown_ids: str = "fallback") -> dict:
    return {"kind": "rating", "users": ["u1", "u2"], "items": ["i1", "i2", "i3"], "num_users": 3, "num_items": 4,
            "unknown_ids": unknown_ids, "rating_scale": [1, 5], "global_mean": 3.5,
            "user_features": {"fields": [{"name": "age", "kind": "bucket", "bounds": [30], "vocab": []}],
                              "dim": 3, "values": [None, ["25"], ["40"]]},
            "item_features": {"fields": [{"name": "genre", "kind": "multi", "vocab": ["a", "b"], "bounds": []}],
                              "dim": 3, "values": [None, ["a b"], ["b"], [""]]},
            "item_titles": ["", "One", "Two", "Three"], "rated": [[], [1], [2, 3]]}


def test_unknown_ids_fall_back_or_fail_and_features_encode() -> None:
    encoder = Encoder(_spec())
    arrays = encoder.pairs(["u1", "new"], ["i2", "gone"], user_values=[None, ["50"]])
    assert arrays["user"].tolist() == [1, UNKNOWN] and arrays["item"].tolist() == [2, UNKNOWN]
    assert arrays["user_features"].tolist() == [[0, 1, 0], [0, 0, 1]]  # a new user's own age is used
    assert arrays["item_features"][0].tolist() == [0, 0, 1]
    np.testing.assert_allclose(encoder.item_features.table()[1], [0, 2 ** -0.5, 2 ** -0.5])
    with pytest.raises(DataError, match=r"request.csv:2: unknown user id\(s\) \['new'\]"):
        Encoder(_spec("error")).pairs(["new"], ["i1"], source="request.csv:2")


@pytest.mark.parametrize(("user", "values"), [("u2", None), ("new", ["50"]), ("new", None)])
@pytest.mark.parametrize("features", [True, False])
def test_all_items_rows_equal_the_per_pair_rows(user: str, values: list[str] | None, features: bool) -> None:
    """all_items encodes the user once and repeats the row: the arrays must be the per-pair ones, bit for bit."""
    spec = _spec() if features else {**_spec(), "user_features": None, "item_features": None}
    encoder = Encoder(spec)
    every = encoder.all_items(user, user_values=values)
    items = spec["items"]
    pairs = encoder.pairs([user] * len(items), items, user_values=None if values is None else [values] * len(items))
    assert every.keys() == pairs.keys()
    for name, array in pairs.items():
        assert every[name].dtype == array.dtype and every[name].shape == array.shape, name
        assert np.array_equal(every[name], array), name


def test_recommend_skips_rated_items_and_shows_titles() -> None:
    encoder = Encoder(_spec())
    top = encoder.recommend("u2", np.array([0.9, 0.5, 0.1]), k=5)
    assert [r["item"] for r in top] == ["i1"] and top[0]["title"] == "One"
    assert [r["item"] for r in encoder.recommend("stranger", np.array([0.1, 0.5, 0.3]), k=2)] == ["i2", "i3"]


@pytest.mark.parametrize("net", [BiasedMF, NCF, FeatureMF])
def test_networks_score_pairs_and_unknown_ids_get_the_bias_fallback(net) -> None:
    model = net(_spec()).eval()
    user, item = torch.tensor([1, 0, 2]), torch.tensor([1, 2, 0])
    features = (torch.rand(3, 3), torch.rand(3, 3))
    assert model(user, item, *features).shape == (3,)
    with torch.no_grad():
        model.user_bias.weight[1:] = 1.0
        model.item_bias.weight[1:] = 2.0
    if net is BiasedMF:  # an unknown user: the global mean plus the item bias, nothing else
        assert model(torch.tensor([0]), torch.tensor([1])).item() == pytest.approx(3.5 + 2.0)


def test_ranking_metrics_match_hand_computation() -> None:
    target = torch.tensor([[-1.0, 1.0, 0.0, 0.0, 1.0], [-1.0, 0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0, 0.0]])
    scores = torch.tensor([[9.0, 3.0, 5.0, 1.0, 0.0], [9.0, 5.0, 4.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    values = {}
    for kind in ("hr", "ndcg", "recall"):
        metric = TopK(kind, k=2)
        metric.update(scores.reshape(-1), target)
        values[kind] = float(metric.compute())
    # user 0: top-2 (seen item 0 excluded) = items 2, 1 -> one hit at rank 2; user 1: items 1, 2 -> no hit;
    # user 2 has no relevant item and does not count.
    assert values["hr"] == pytest.approx(0.5)
    assert values["recall"] == pytest.approx(0.25)
    assert values["ndcg"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)) / 2)
    missed = TopK("hr", k=2)  # a held-out item absent from training (2 in the unknown slot) is a miss
    missed.update(torch.tensor([[9.0, 1.0, 0.0]]), torch.tensor([[2.0, 0.0, 0.0]]))
    assert float(missed.compute()) == 0.0 and float(missed.users) == 1


def test_ml100k_slice_splits_and_spec() -> None:
    from converge_recsys.data import RecsysData
    from converge_recsys.sources import MovieLens100k

    data = RecsysData(MovieLens100k(), task="ranking", split="leave_last_out", max_users=50)
    spec = data.spec()
    parts = data._prepare()["parts"]
    assert len(parts["test"]) == len(parts["val"]) == 50
    assert spec["num_users"] == 51 and spec["item_titles"][1]
    users, targets = data.ranking_targets("test")
    assert (targets >= 1).sum(1).tolist() == [1] * 50  # one held-out item per user (2: not in training)
    seen = data._prepare()["item_idx"][parts["train"]], data._prepare()["user_idx"][parts["train"]]
    row_of = {int(u): r for r, u in enumerate(users)}
    assert all(targets[row_of[int(u)], int(i)] == -1 for i, u in zip(*seen, strict=True))
    assert json.loads(json.dumps(spec)) == spec  # plain JSON


def _slice(task: str = "rating", **options):
    """A data module on the first 80 users of ml-100k; `sampling_seed` 0, the run's `seed` as converge sets it."""
    from converge_recsys.data import RecsysData
    from converge_recsys.sources import MovieLens100k

    split = "random" if task == "rating" else "leave_last_out"
    return RecsysData(MovieLens100k(), task=task, split=split, max_users=80, batch_size=64, **options)


def _rows(loader) -> list[tuple[int, int, float]]:
    """(user, item, target) of every row the loader serves, in order."""
    return [(int(u), int(i), float(t)) for users, items, *_, targets in loader
            for u, i, t in zip(users, items, targets, strict=True)]


def test_seed_orders_the_epochs_and_split_seed_only_splits() -> None:
    data = _slice()
    order, train = _rows(data.train_dataloader()), data._prepare()["parts"]["train"]
    data.sampling_seed = 1
    reordered = _rows(data.train_dataloader())
    assert reordered != order and sorted(reordered) == sorted(order), "seed: the same rows, another order"
    reseeded = _slice()
    reseeded.sampling_seed = 1
    assert np.array_equal(reseeded._prepare()["parts"]["train"], train), "seed does not change the split"
    resplit = _slice(split_seed=1)
    assert not np.array_equal(resplit._prepare()["parts"]["train"], train)
    assert list(resplit.train_dataloader().sampler) == list(_slice().train_dataloader().sampler), \
        "split_seed does not change the order"


def test_ranking_negatives_are_drawn_from_seed_epoch_and_row(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _slice("ranking")
    loader = data.train_dataloader()
    first = _rows(loader)
    loader.sampler.set_epoch(1)  # what Lightning does each epoch
    second = _rows(loader)
    resumed = data.train_dataloader()  # a run resumed at epoch 1: a new loader, whatever the global RNG drew
    torch.rand(5)
    resumed.sampler.set_epoch(1)
    assert _rows(resumed) == second
    negatives = [sorted(row for row in rows if row[2] == 0) for rows in (first, second)]
    assert negatives[0] != negatives[1], "fresh negatives every epoch"
    positives = {(u, i) for u, i, target in first if target == 1}
    assert len(first) == 5 * len(positives)
    assert sum((u, i) in positives for u, i, _ in negatives[0]) < 0.01 * len(negatives[0]), "unseen items"
    shards = []
    for rank in (0, 1):  # each rank of a 2-process world: its share of the same rows, as many steps
        monkeypatch.setattr(WORLD, lambda rank=rank: (2, rank))
        shards.append(list(data.train_dataloader()))
    assert len(shards[0]) == len(shards[1]) and set(_rows(shards[0]) + _rows(shards[1])) == set(first)


def test_validation_under_ddp_reads_every_rating_once(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _slice(eval_batch_size=70)
    seen = {}
    for world, rank in ((1, 0), (2, 0), (2, 1)):  # one process, then each rank of a 2-process world
        monkeypatch.setattr(WORLD, lambda world=world, rank=rank: (world, rank))
        seen[world, rank] = _rows(data.val_dataloader())
    assert sorted(seen[2, 0] + seen[2, 1]) == sorted(seen[1, 0]), "no rating dropped or read twice"
    assert len(seen[1, 0]) == len(data._prepare()["parts"]["val"])


def test_experiments_compose() -> None:
    rating = compose(["experiment=recsys/ml100k", "data.fold=3"], output_dir="/tmp/unused")
    assert rating.data.split == "kfold" and rating.data.fold == 3 and rating.task_name == "recsys-ml100k"
    ranking = compose(["experiment=recsys/ml100k_ranking"], output_dir="/tmp/unused")
    assert ranking.data.task == "ranking" and ranking.data.eval_negatives == 0
