"""The converge conformance suite (train, checkpoint, resume, evaluate, export, predict) on each text model,
on small slices of the real Reuters R8 corpus."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from tiny_bert import TINY_BERT

from converge.testing import PluginConformance, load_task, run_cli, served

# 160 training and 160 test documents of R8, a small vocabulary: seconds per run, real text.
SLICE = ["data=text/r8", "data.max_docs=160", "data.tokenizer.max_vocab=3000", "data.batch_size=32"]
WORDS_IN_ORDER = ["data.tokenizer.bigram_buckets=0", "data.tokenizer.term_frequency=raw",
                  "data.tokenizer.max_words=64"]
# A barely trained model's int8 copy can differ from fp32 by more than a trained one's.
LOOSE_INT8 = ["export.max_metric_drop.int8=1.0", "export.tolerance.int8.rtol=10.0"]


def _texts(folder: Path) -> list[str]:
    """Two news stories and an empty file (served as an all-padding row)."""
    stories = {"oil.txt": "opec agreed to cut crude oil output as prices fell in world markets",
               "earnings.txt": "the company reported net profit of mln dlrs per share for the quarter",
               "empty.txt": ""}
    paths = []
    for name, text in stories.items():
        (folder / name).write_text(text, encoding="utf-8")
        paths.append(str(folder / name))
    return paths


class TextConformance(PluginConformance):
    """What every text class serves (pytest collects only the Test* classes below)."""

    export_overrides = LOOSE_INT8

    def predict_inputs(self, folder: Path) -> list[str]:
        return _texts(folder)

    def empty_predict_input(self, folder: Path) -> str:
        (folder / "no_rows.csv").write_text("text\n", encoding="utf-8")
        return str(folder / "no_rows.csv")

    def serve_instances(self, folder: Path) -> list[tuple[dict | str, list[str]]]:
        paths = _texts(folder)
        texts = [Path(path).read_text(encoding="utf-8") for path in paths]
        return [({"text": texts[0]}, [paths[0]]), (texts[1], [paths[1]]), ({"text": texts[2]}, [paths[2]])]


class TestFastText(TextConformance):
    # A larger validation split than the others': the drift reference is computed over it.
    overrides = ["data=text/r8", "data.max_docs=400", "data.val_fraction=0.5", "data.tokenizer.max_vocab=3000",
                 "data.batch_size=32", "model=text/fasttext", "data.tokenizer.bigram_buckets=2000", "model.net.dim=16"]

    def test_served_requests_are_logged_as_a_table_text_csv_reads(self, bundle: Path, tmp_path: Path) -> None:
        import httpx

        from converge_text.sources import read_table

        texts = ["opec agreed to cut crude oil output", "net profit, per share, rose\nin the quarter", ""]
        with served([f"news={bundle}"], "--log-requests", str(tmp_path), "--log-sample", "1") as server:
            body = {"instances": [{"text": texts[0]}, texts[1], {"text": texts[2]}]}
            answers = httpx.post(f"{server.url}/v1/models/news/predict", json=body).json()["answers"]
            assert server.stop()[0] == 0
        table = read_table(tmp_path / "news" / "requests.csv", text_column="text", label_column="label")
        assert table.texts == texts and table.labels == [answer["label"] for answer in answers]

    def test_drift_flags_another_corpus_and_not_held_out_news(self, bundle: Path, tmp_path: Path) -> None:
        """R8's own test stories are the training distribution; Rotten Tomatoes' film reviews are not."""
        from converge_text.sources import OrangeCorpus, RottenTomatoes

        held, other = OrangeCorpus("r8").load().test.texts, RottenTomatoes().load().train.texts
        corpora = {"held": held[::len(held) // 300][:300], "other": other[::len(other) // 300][:300]}  # all topics
        reports = {}
        for name, texts in corpora.items():
            with open(tmp_path / f"{name}.csv", "w", newline="", encoding="utf-8") as table:
                csv.writer(table).writerows([["text"], *([text] for text in texts)])
            done = run_cli(["drift", str(bundle), str(tmp_path / f"{name}.csv")])
            assert done.returncode == 0, done.stderr
            reports[name] = json.loads(done.stdout)
        assert not reports["held"]["drift"], reports["held"]
        assert reports["other"]["statistics"]["oov_rate"]["drift"], reports["other"]


class TestKimCNN(TextConformance):
    overrides = [*SLICE, *WORDS_IN_ORDER, "model=text/cnn", "model.net.dim=16", "model.net.filters=8"]


class TestTransformer(TextConformance):
    overrides = [*SLICE, *WORDS_IN_ORDER, "model=text/transformer", "model.net.dim=16", "model.net.heads=2",
                 "model.net.layers=1", "model.net.feedforward=32"]


class TestPretrainedEncoder(TextConformance):
    """model=text/minilm's network and its WordPiece tokenizer, on a tiny random BERT in Hugging Face format."""

    overrides = [*SLICE, "data.tokenizer.max_words=64", f"data.tokenizer.pretrained={TINY_BERT}", "model=text/minilm",
                 f"model.net.source={TINY_BERT}"]

    def test_onnx_answers_as_eager_at_two_batch_sizes_and_two_lengths(self, trained: dict, bundle: Path) -> None:
        import onnx
        import onnxruntime

        fused = {node.op_type for node in onnx.load(str(bundle / "model.onnx")).graph.node}
        assert {"SkipLayerNormalization", "BiasGelu"} <= fused  # onnxruntime's transformer fusions (onnx_fusions)

        task = load_task(trained["metrics"]["kept"]["checkpoint"]).eval()
        session = onnxruntime.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
        torch.manual_seed(0)
        for batch, length in ((1, 7), (5, 7), (1, 50), (5, 50)):
            ids = torch.randint(5, task.spec["num_ids"], (batch, length))
            ids[:, 0], ids[-1, length // 2:] = 2, 0  # [CLS] first; the last row padded past its middle
            with torch.no_grad():
                expected = task(ids)
            got = torch.from_numpy(session.run(None, {"token_ids": ids.numpy()})[0])
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


class TestFastTextExperiment(TextConformance):
    """The recipe of `experiment=text/r8` itself (the linear model, squared hinge, Adam), on the slice."""

    overrides = ["experiment=text/r8", "data.max_docs=160", "data.tokenizer.max_vocab=3000",
                 "data.tokenizer.bigram_buckets=5000", "data.batch_size=32"]
