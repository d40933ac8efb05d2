"""converge-recsys: rating prediction and top-K ranking on converge.

Kept import-light: the registry imports `converge_recsys.plugin`, which must not pull in torch.
"""
