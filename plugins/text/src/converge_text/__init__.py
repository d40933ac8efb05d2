"""converge-text: text classification on converge.

Kept import-light: the registry imports `converge_text.plugin`, which must not pull in torch.
"""
