"""converge-vision: image classification on converge.

Kept import-light: the registry imports `converge_vision.plugin`, which must not pull in torch.
"""
