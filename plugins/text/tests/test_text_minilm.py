"""model=text/minilm's parts on a tiny random BERT: its WordPiece tokenizer, loading its weights, and the
frozen-encoder cache (each text encoded once, the file named by the weights; that it changes no prediction is
the conformance suite's test, TestPretrainedEncoder)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from tiny_bert import TINY_BERT, vocabulary, write_tiny_bert

from converge import ConfigError, DataError, FeatureCache
from converge.testing import train_run
from converge_text.encoders import PretrainedEncoderClassifier
from converge_text.tokenizer import tokenizer_from_spec
from converge_text.wordpiece import WordPieceTokenizer

REVIEWS = [("a good film , not bad", "fresh"), ("the movie is bad", "rotten"), ("good good trade", "fresh"),
           ("not good at all", "rotten"), ("it said the price is good", "fresh"), ("bad bank , bad share", "rotten")]


@pytest.fixture
def reviews(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """60 short labelled texts in a CSV (text/csv data), and a data cache and a features folder of this test's own."""
    monkeypatch.setenv("CONVERGE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVERGE_FEATURES_DIR", str(tmp_path / "features"))
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((f"{text} {i}", label) for i in range(10) for text, label in REVIEWS)
    return path


def train(reviews: Path, run_dir: Path, finetune: str = "frozen", *overrides: str) -> None:
    """A real `converge train` of model=text/minilm on the tiny BERT, fine-tuned as `finetune` says, 3 epochs."""
    train_run(["data=text/csv", f"data.source.path={reviews}", f"data.tokenizer.pretrained={TINY_BERT}",
               "data.batch_size=8", "model=text/minilm", f"model.net.source={TINY_BERT}",
               f"finetune={finetune}", "trainer.max_epochs=3", "monitor.keep=last", "hardware=cpu",
               "logger=none", "~callbacks.progress_bar", "~callbacks.model_summary", *overrides], run_dir)


def cache_files(reviews: Path) -> list[Path]:
    return list((reviews.parent / "features").glob("*.npz"))


def test_wordpiece_tokenizer_is_the_models_own_and_survives_its_spec() -> None:
    tokenizer = WordPieceTokenizer.from_pretrained(str(TINY_BERT), max_length=8)
    ids = tokenizer.encode("The oil PRICE fell")
    pieces = [tokenizer.tokenizer.id_to_token(i) for i in ids]
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and len(ids) == 8  # truncated, special pieces kept
    assert pieces[1:4] == ["the", "oil", "price"]  # lower-cased, as the model's normaliser says
    rebuilt = tokenizer_from_spec(json.loads(json.dumps(tokenizer.to_spec())))
    assert rebuilt.encode("The oil PRICE fell") == ids and rebuilt.num_ids == tokenizer.num_ids


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "bert")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 64, "intermediate_size": 128}))
    with pytest.raises(ConfigError, match=r"BertModel[^\n]*\n(.*\n)*  shape mismatch(.*\n)*.*model\.net\.source="):
        PretrainedEncoderClassifier(config["vocab_size"], 2, str(folder))


def test_data_tokenized_with_another_vocabulary_is_refused(reviews: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.tokenizer.pretrained"):
        train_run(["data=text/csv", f"data.source.path={reviews}", "model=text/minilm", f"model.net.source={TINY_BERT}",
                   "data.tokenizer.bigram_buckets=0", "data.tokenizer.term_frequency=raw"], tmp_path / "run")


def test_a_frozen_encoder_runs_once_per_text_and_its_cache_serves_the_next_run(reviews: Path, tmp_path: Path) -> None:
    train(reviews, tmp_path / "first")
    (path,) = cache_files(reviews)
    assert len(FeatureCache(path).rows) == 60  # every text of train, val and test: once
    written = path.stat().st_mtime_ns
    train(reviews, tmp_path / "second")
    assert cache_files(reviews) == [path] and path.stat().st_mtime_ns == written  # nothing new to encode


def test_other_weights_open_another_cache() -> None:
    net = PretrainedEncoderClassifier(len(vocabulary()), 2, str(TINY_BERT))
    net.encoder.requires_grad_(False)
    ids = torch.tensor([[2, 40, 41, 3]])
    before = net.cached(net.encoder, ids, net.pooled)
    first = net.cached.cache.path
    changed = {key: value.clone() for key, value in net.state_dict().items()}
    changed["encoder.embeddings.word_embeddings.weight"][40] += 1.0
    net.load_state_dict(changed)
    assert not torch.equal(net.cached(net.encoder, ids, net.pooled), before) and net.cached.cache.path != first


def test_a_gradual_run_resumed_after_its_unfreeze_epoch_goes_on_as_if_never_stopped(reviews: Path,
                                                                                     tmp_path: Path) -> None:
    """Stopped in epoch 2, after the top layer unfroze in epoch 1, and resumed from last.ckpt: the top layer
    trains again, in the optimiser groups of the checkpoint, at the schedule's LRs, and the layers still frozen
    run without dropout as before the stop: the weights of a run never stopped. Its batches are grouped by length
    (`data.group_by_length`, as the fine-tuning recipe's), drawn from (seed, epoch) too."""
    gradual = ["finetune.unfreeze_at_epoch=1", "finetune.blocks=1", "test_after_fit=false", "data.group_by_length=true"]
    stop = ["+callbacks.stop._target_=converge.testing.faults.FailAt", "+callbacks.stop.epoch=2",
            "+callbacks.stop.batch=0"]
    train(reviews, tmp_path / "unbroken", "gradual", *gradual)
    with pytest.raises(DataError, match="injected failure"):
        train(reviews, tmp_path / "stopped", "gradual", *gradual, *stop)
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    train(reviews, tmp_path / "stopped", "gradual", *gradual, f"ckpt_path={last}")
    unbroken, resumed = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                         for run in ("unbroken", "stopped"))
    assert [key for key in unbroken if not torch.equal(unbroken[key], resumed[key])] == []


@pytest.mark.slow  # the real all-MiniLM-L6-v2 (22.7M parameters): `pytest -m slow`
@pytest.mark.parametrize("experiment", ["rotten_tomatoes_minilm", "rotten_tomatoes_minilm_frozen", "r8_fewshot_minilm"])
def test_minilm_experiment_trains_on_a_slice(experiment: str, tmp_path: Path) -> None:
    train_run([f"experiment=text/{experiment}", "data.max_docs=64", "trainer.max_epochs=1", "logger=none",
               "~callbacks.progress_bar"], tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["test"]["test/acc"] <= 1 and metrics["kept"]["checkpoint"]
