"""Console logging under Hydra: each message once, no advertising."""

from __future__ import annotations

import logging
import warnings


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def configure_console() -> None:
    """Lightning's package logger prints to the console itself and also propagates to the root
    logger, where Hydra's handlers print it again (and write train.log): keep Hydra's. Drop
    Lightning's product tips and a deprecation warning it raises against itself."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)
    for chatty in ("onnx_ir", "onnxscript", "onnxruntime", "torch.onnx"):  # export's step-by-step INFO lines
        logging.getLogger(chatty).setLevel(logging.WARNING)
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _not_a_tip not in rank_zero_logger.filters:
        rank_zero_logger.addFilter(_not_a_tip)
