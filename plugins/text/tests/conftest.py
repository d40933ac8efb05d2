"""The text plugin's test modules share helpers (`tiny_bert`): importable by name from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
