"""`converge serve`: bundles behind an HTTP JSON API, with dynamic batching (Starlette, uvicorn, onnxruntime).

A layer just above `converge.runtime`, and like it free of torch, Lightning, Hydra, OmegaConf and torchmetrics:
the server answers through the runtime's code (the plugin's processors, `answer_batch`), so it answers exactly
what `converge predict` answers.
"""
