"""A pretrained Transformer encoder (BERT family, Hugging Face format) with mean pooling and a linear head.

The encoder is transformers' `BertModel` built from the source's `config.json`, its weights read from
`model.safetensors` (never unpickled, never downloaded: `HF_HUB_OFFLINE` is set before transformers loads).
It reads the ids of the model's own WordPiece vocabulary, so the data must be tokenized with it
(`data.tokenizer.pretrained`, the same source).

The encoder runs through `converge.FrozenFeatures`: when every encoder weight is frozen (`finetune=frozen`, or
a gradual strategy before it unfreezes), in eval mode (fixed features, no dropout: the head's own dropout
regularises) and, with `finetune.cache_features`, once per distinct text (its ids without the padding): its
pooled outputs are cached, named by the encoder's weights and config.json, so later epochs train the head
alone. The exported model is the whole network, cache or not.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn

from converge import ConfigError, FrozenFeatures, load_state, locate, read_weights, row_key
from converge_text.tokenizer import PAD_ID

IGNORED_KEYS = ("pooler.", "embeddings.position_ids")  # BERT's [CLS] pooler (mean pooling here); a fixed buffer


class PretrainedEncoderClassifier(nn.Module):
    """Mean-pooled pretrained BERT encoder, dropout, linear head: logits (batch, classes) from ids (batch, sequence).

    Args:
        num_ids: the data's id space; must be the encoder's vocabulary size.
        num_classes: the head's outputs.
        source: `package:<distribution>` or a Hugging Face-format folder (config.json, model.safetensors).
        dropout: on the pooled features, before the head.
    """

    reads_word_order = True

    def __init__(self, num_ids: int, num_classes: int, source: str, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = load_bert(source)
        if self.encoder.config.vocab_size != num_ids:
            raise ConfigError(f"{source} reads ids of its own vocabulary ({self.encoder.config.vocab_size}), the data "
                              f"has {num_ids}: tokenize with it, data.tokenizer.pretrained={source}")
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.config.hidden_size, num_classes)
        self.cached = FrozenFeatures(describe=bert_config, key=unpadded_key)

    def blocks(self) -> list[nn.Module]:
        """The encoder's blocks, bottom to top: the embeddings, then each Transformer layer."""
        return [self.encoder.embeddings, *self.encoder.encoder.layer]

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.cached(self.encoder, token_ids, self.pooled)))

    def pooled(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The mean of the encoder's last hidden states over the real tokens (padding masked out of attention too)."""
        mask = token_ids != PAD_ID
        # Positions and segment ids given, not sliced from the encoder's buffers: a slice of a fixed-size buffer
        # would bound the exported sequence axis by max_position_embeddings.
        positions = torch.arange(token_ids.shape[1], device=token_ids.device).expand_as(token_ids)
        hidden = self.encoder(input_ids=token_ids, attention_mask=mask.long(), position_ids=positions,
                              token_type_ids=torch.zeros_like(token_ids)).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # an empty text: zeros


def bert_config(encoder: nn.Module) -> str:
    """What shapes the encoder's outputs besides its weights: its config.json, for the feature cache's name."""
    return encoder.config.to_json_string()


def unpadded_key(token_ids: np.ndarray) -> bytes:
    """A text's cache key: its ids without the padding, which the pooling ignores (so any padded length)."""
    return row_key(token_ids[token_ids != PAD_ID])


def load_bert(source: str) -> nn.Module:
    """transformers' BertModel of a Hugging Face-format source: built from its config.json, loaded from its weights.

    Args:
        source: `package:<distribution>` or a folder (config.json, model.safetensors or pytorch_model.bin).

    Raises:
        ConfigError: no such source, or its weights do not fit its config (the key-by-key table says how).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach for the network
    from transformers import BertConfig, BertModel

    config_file = locate(source) / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"pretrained source {source}: no config.json in {config_file.parent}")
    encoder = BertModel(BertConfig.from_dict(json.loads(config_file.read_text(encoding="utf-8"))),
                        add_pooling_layer=False)
    state, _ = read_weights(source)
    state = {key: value for key, value in state.items() if not key.removeprefix("bert.").startswith(IGNORED_KEYS)}
    prefix = "bert." if any(key.startswith("bert.") for key in state) else ""  # a BertFor... checkpoint's names
    load_state(encoder, state, prefix=prefix, what=f"pretrained encoder {source}",
               advice=f"The weights must fit the config.json beside them: is model.net.source={source} one model?")
    return encoder
