"""The core Hydra config tree, importable as `converge.conf` so `pkg://converge.conf` works installed or editable."""
