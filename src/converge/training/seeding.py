"""Each training epoch's randomness (dropout, noise in a training step) drawn from (seed, epoch).

A run resumed from its last checkpoint starts epoch N in a fresh process, where the
global RNGs hold whatever model building drew, not what an uninterrupted run would
hold after N epochs. Reseeding them at the start of every epoch makes epoch N's
draws depend on (seed, N) alone, so the resumed run ends with the same weights.
(Data order and augmentation are drawn from (seed, epoch) by converge.data.sampling.)
"""

from __future__ import annotations

import random

import lightning.pytorch as pl
import numpy as np
import torch


class EpochSeed(pl.Callback):
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = np.random.SeedSequence([self.seed, trainer.current_epoch]).generate_state(2)
        random.seed(int(state[0]))
        np.random.seed(int(state[1]))
        torch.manual_seed(int(state[0]) << 32 | int(state[1]))  # every CUDA device too
