"""The tokenizer and vocabulary: learned from training texts only, rebuilt exactly from the plain-JSON spec."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from converge_text.models import FastText, KimCNN, TransformerClassifier
from converge_text.tokenizer import FIRST_WORD_ID, PAD_ID, UNKNOWN_ID, TextTokenizer

TRAIN = ["Oil prices rose; OPEC cut output.", "Oil output fell!", "Shares of the bank rose sharply"]


def test_vocabulary_is_lowercased_ranked_by_frequency_then_alphabet() -> None:
    tokenizer = TextTokenizer.build(TRAIN, max_vocab=4)
    assert tokenizer.vocabulary == ("oil", "output", "rose", "!")  # 2, 2, 2 occurrences, then ties by text
    assert tokenizer.encode("OIL rose unseen") == [FIRST_WORD_ID, FIRST_WORD_ID + 2, UNKNOWN_ID]


def test_spec_round_trip_through_json_encodes_identically() -> None:
    tokenizer = TextTokenizer.build(TRAIN, bigram_buckets=97, max_words=6, term_frequency="log")
    rebuilt = TextTokenizer.from_spec(json.loads(json.dumps(tokenizer.to_spec())))
    assert rebuilt == tokenizer
    texts = ["oil oil oil output rose", "", "Shares of the bank rose sharply today and more"]
    assert np.array_equal(rebuilt.encode_batch(texts), tokenizer.encode_batch(texts))


def test_bigram_ids_are_stable_across_processes() -> None:
    """Hashing must not depend on PYTHONHASHSEED: a served model sees the ids it was trained on."""
    tokenizer = TextTokenizer.build(TRAIN, bigram_buckets=1000)
    spec = json.dumps(tokenizer.to_spec())
    program = ("import json, sys; from converge_text.tokenizer import TextTokenizer; "
               "print(TextTokenizer.from_spec(json.loads(sys.argv[1])).encode('oil prices rose'))")
    ids = {subprocess.run([sys.executable, "-c", program, spec], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert ids == {f"{tokenizer.encode('oil prices rose')}\n"}
    words = tokenizer.encode("oil prices rose")
    assert len(words) == 5 and all(i >= FIRST_WORD_ID + len(tokenizer.vocabulary) for i in words[3:])


def test_term_frequency_bags_and_truncation() -> None:
    text = "a a a a a b"
    raw = TextTokenizer.build([text], term_frequency="raw")
    assert raw.encode(text) == [2, 2, 2, 2, 2, 3]
    assert TextTokenizer.build([text], term_frequency="binary").encode(text) == [2, 3]
    assert TextTokenizer.build([text], term_frequency="log").encode(text) == [2, 2, 2, 3]  # 1 + floor(log2 5)
    assert TextTokenizer.build([text], max_words=2).encode(text) == [2, 2]
    with pytest.raises(ValueError, match="term_frequency"):
        TextTokenizer((), term_frequency="tfidf")


def test_empty_text_is_an_all_padding_row_and_every_model_answers_it() -> None:
    tokenizer = TextTokenizer.build(TRAIN)
    batch = tokenizer.encode_batch(["", "oil rose", "   "])
    assert batch.dtype == np.int64 and batch.shape == (3, 2)
    assert (batch[0] == PAD_ID).all() and (batch[2] == PAD_ID).all()
    ids = torch.from_numpy(batch)
    for net in (FastText(tokenizer.num_ids, 3), FastText(tokenizer.num_ids, 3, dim=None),
                KimCNN(tokenizer.num_ids, 3, dim=8, filters=4),
                TransformerClassifier(tokenizer.num_ids, 3, dim=8, heads=2, layers=1, feedforward=8)):
        logits = net.eval()(ids)
        assert logits.shape == (3, 3) and torch.isfinite(logits).all(), type(net).__name__


def test_padding_does_not_change_the_answer() -> None:
    tokenizer = TextTokenizer.build(TRAIN)
    ids = torch.from_numpy(tokenizer.encode_batch(["oil output rose"]))
    padded = torch.nn.functional.pad(ids, (0, 7), value=PAD_ID)
    torch.manual_seed(0)
    for net in (FastText(tokenizer.num_ids, 3), FastText(tokenizer.num_ids, 3, dim=None),
                KimCNN(tokenizer.num_ids, 3, dim=8, filters=4),
                TransformerClassifier(tokenizer.num_ids, 3, dim=8, heads=2, layers=1, feedforward=8)):
        net.eval()
        assert torch.allclose(net(ids), net(padded), atol=1e-5), type(net).__name__


def test_vocabulary_and_classes_come_from_the_training_split_only(tmp_path) -> None:
    from converge_text.data import TextClassificationData
    from converge_text.sources import TextTable

    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("text,label\nalpha beta,x\nbeta gamma,y\nalpha gamma,x\ngamma delta,y\n", encoding="utf-8")
    test.write_text("text,label\nzeta only in test,x\n", encoding="utf-8")
    data = TextClassificationData(TextTable(str(train), test_path=str(test)), val_fraction=0.0)
    spec = data.spec()
    assert "zeta" not in spec["tokenizer"]["vocabulary"]
    assert spec["class_names"] == ["x", "y"] and spec["num_ids"] == 2 + 4 + 0
    assert json.loads(json.dumps(spec)) == spec


def test_preprocessor_serves_text_files_and_table_rows_from_the_spec_alone(tmp_path) -> None:
    from converge import DataError
    from converge_text.processing import TextPreprocessor

    tokenizer = TextTokenizer.build(TRAIN, bigram_buckets=16, term_frequency="log")
    spec = json.loads(json.dumps({"tokenizer": tokenizer.to_spec(), "class_names": ["a", "b"]}))
    story, table = tmp_path / "story.txt", tmp_path / "rows.csv"
    story.write_text("Oil prices rose", encoding="utf-8")
    table.write_text('id,text\n1,"oil output fell"\n2,""\n', encoding="utf-8")
    preprocessor = TextPreprocessor(spec)
    requests = list(preprocessor.requests([str(story), str(table)]))
    assert [r.source for r in requests] == [str(story), f"{table}:2", f"{table}:3"]
    batch = preprocessor.collate(requests)["token_ids"]
    assert batch.dtype == np.int64 and batch.shape[0] == 3 and not batch[2].any()
    assert batch[0, :5].tolist() == tokenizer.encode("Oil prices rose")
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff broken\n")
    with pytest.raises(DataError, match=r"bad.txt:2: not valid UTF-8"):
        list(preprocessor.requests([str(tmp_path / "bad.txt")]))
