"""model=text/minilm's parts on a tiny random BERT: its WordPiece tokenizer, loading its weights, and the
frozen-encoder cache (each text encoded once, the file named by the weights, predictions as without it)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from tiny_bert import TINY_BERT, write_tiny_bert

from converge import ConfigError, FeatureCache
from converge.app.build import build_datamodule, build_task
from converge.testing.compose import compose
from converge_text.encoders import PretrainedEncoderClassifier
from converge_text.tokenizer import tokenizer_from_spec
from converge_text.wordpiece import WordPieceTokenizer

REVIEWS = [("a good film , not bad", "fresh"), ("the movie is bad", "rotten"), ("good good trade", "fresh"),
           ("not good at all", "rotten"), ("it said the price is good", "fresh"), ("bad bank , bad share", "rotten")]


@pytest.fixture
def reviews(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """60 short labelled texts in a CSV (text/csv data), and a data cache of this test's own."""
    monkeypatch.setenv("CONVERGE_DATA_DIR", str(tmp_path / "cache"))
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((f"{text} {i}", label) for i in range(10) for text, label in REVIEWS)
    return path


def build(reviews: Path, *overrides: str) -> tuple[pl.LightningDataModule, torch.nn.Module]:
    cfg = compose(["data=text/csv", f"data.source.path={reviews}", f"data.tokenizer.pretrained={TINY_BERT}",
                   "data.batch_size=8", "model=text/minilm", f"model.net.source={TINY_BERT}", *overrides])
    datamodule = build_datamodule(cfg.data)
    return datamodule, build_task(cfg, datamodule.spec())


def fit_frozen(reviews: Path, epochs: int, *overrides: str) -> tuple[torch.nn.Module, pl.LightningDataModule]:
    """Train the head over a frozen encoder with a real Trainer, seeded, for `epochs`."""
    pl.seed_everything(0)
    datamodule, task = build(reviews, *overrides)
    task.backbone().requires_grad_(False)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", deterministic=True)
    trainer.fit(task, datamodule=datamodule)
    return task, datamodule


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
    with pytest.raises(ConfigError, match="does not fit the BertModel"):
        PretrainedEncoderClassifier(config["vocab_size"], 2, str(folder))


def test_data_tokenized_with_another_vocabulary_is_refused(reviews: Path) -> None:
    cfg = compose(["data=text/csv", f"data.source.path={reviews}", "model=text/minilm", f"model.net.source={TINY_BERT}",
                   "data.tokenizer.bigram_buckets=0", "data.tokenizer.term_frequency=raw"])
    datamodule = build_datamodule(cfg.data)
    with pytest.raises(ConfigError, match="data.tokenizer.pretrained"):
        build_task(cfg, datamodule.spec())


def test_a_frozen_encoder_runs_once_per_text_and_its_cache_serves_the_next_run(reviews: Path) -> None:
    calls: list[int] = []
    _, datamodule = fit_frozen(reviews, 1)
    texts = sum(len(datamodule.dataset(split)) for split in ("train", "val"))
    cache_files = list((reviews.parent / "cache" / "features").glob("*.npz"))
    assert len(cache_files) == 1 and len(FeatureCache(cache_files[0]).rows) == texts

    datamodule, task = build(reviews)
    task.backbone().requires_grad_(False)
    task.backbone().register_forward_hook(lambda module, args, output: calls.append(1))
    pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu").fit(task, datamodule=datamodule)
    assert not calls, "the second run encoded texts the first one had cached"

    changed = {key: value.clone() for key, value in task.state_dict().items()}
    changed["net.encoder.embeddings.word_embeddings.weight"][5] += 1.0
    task.load_state_dict(changed)  # other weights: another cache, computed anew
    task.net(torch.tensor([[2, 9, 3]]))
    assert calls, "features of changed weights came from the old cache"


def test_predictions_with_the_cache_are_those_without(reviews: Path) -> None:
    cached, datamodule = fit_frozen(reviews, 3)
    plain, _ = fit_frozen(reviews, 3, "model.net.cache_features=false")
    batch, _ = next(iter(datamodule.test_dataloader()))
    cached.eval(), plain.eval()
    with torch.no_grad():
        expected, got = plain(batch), cached(batch)
    assert torch.equal(got, expected)  # the same features, so the same head, bit for bit


def test_the_onnx_transformer_answers_as_eager_at_two_batch_sizes_and_two_lengths(reviews: Path,
                                                                                  tmp_path: Path) -> None:
    from converge.exporting.formats import exportable_copy, runner, write_onnx

    _, task = build(reviews)
    task.eval()
    example = task.export_inputs((torch.tensor([[2, 40, 41, 3], [2, 42, 3, 0]]),))
    write_onnx(exportable_copy(task), task, example, tmp_path / "model.onnx", opset=18)
    run = runner("onnx", tmp_path / "model.onnx")
    torch.manual_seed(0)
    for batch, length in ((1, 7), (5, 7), (1, 50), (5, 50)):
        ids = torch.randint(5, 128, (batch, length))
        ids[:, 0], ids[-1, length // 2:] = 2, 0  # [CLS] first; the last row padded past its middle
        with torch.no_grad():
            torch.testing.assert_close(run({"token_ids": ids}), task(ids), atol=1e-4, rtol=1e-4)
