"""The commands behind the CLI: train, evaluate (and, as they land, export)."""
