"""Serving an exported bundle: numpy and onnxruntime only (no torch, Lightning or Hydra import here)."""
