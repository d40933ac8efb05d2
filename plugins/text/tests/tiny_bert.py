"""A tiny randomly initialised BERT in Hugging Face format (config.json, model.safetensors, tokenizer.json,
vocab.txt): what the tests load, freeze, cache, export and serve instead of the real MiniLM (2 layers, 32 wide,
a vocabulary of letters, digits and a few words: news text splits into pieces of them)."""

from __future__ import annotations

import atexit
import json
import shutil
import string
import tempfile
from pathlib import Path

import torch

WORDS = ("the", "of", "to", "and", "in", "said", "oil", "company", "share", "profit", "price", "bank", "trade",
         "good", "bad", "film", "movie", "not", "is", "it")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 0, "hidden_size": 32,
          "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu",
          "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 128,
          "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0}


def vocabulary() -> list[str]:
    characters = string.ascii_lowercase + string.digits + string.punctuation
    return [*SPECIALS, *characters, *(f"##{c}" for c in string.ascii_lowercase + string.digits), *WORDS]


def write_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Write the tiny BERT into `folder` (created) and return it; the same seed writes the same weights."""
    from safetensors.torch import save_file
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    words = vocabulary()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True).save(str(folder / "tokenizer.json"))
    config = {**CONFIG, "vocab_size": len(words)}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = BertModel(BertConfig.from_dict(config), add_pooling_layer=False)
    save_file({f"bert.{key}": value.contiguous() for key, value in model.state_dict().items()},
              str(folder / "model.safetensors"))  # "bert." as a BertFor... checkpoint writes it
    return folder


def tiny_bert_folder() -> Path:
    """One tiny BERT for the whole test session, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="converge-tiny-bert-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return write_tiny_bert(folder / "bert")


TINY_BERT = tiny_bert_folder()
