"""The shared export path: every task leaves training as a verified bundle (see DESIGN.md, "Export bundle")."""
