"""Entry point of DDP ranks > 0 (`python -m converge.app.ddp_rank`): train the config rank 0 handed over.

converge.training.distributed starts these processes with rank 0's resolved config in the
environment, so only rank 0 ever runs Hydra (see that module).
"""

from __future__ import annotations

import json
import os

from omegaconf import OmegaConf

from converge.app.train import train
from converge.errors import run_reporting_errors
from converge.training.distributed import RUN_CONFIG_ENV

if __name__ == "__main__":
    config = OmegaConf.create(json.loads(os.environ.pop(RUN_CONFIG_ENV)))
    run_reporting_errors(lambda: train(config))
