"""Hyperparameter search with Optuna: the search space, the study on disk, and the pruning callback.

The Hydra side (the Sweeper that `converge train -m ... hparams_search=...` runs) lives in
`hydra_plugins.converge_optuna`, because Hydra only discovers plugins in that namespace package.
"""
