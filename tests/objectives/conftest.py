"""Helpers shared by the objective tests (preference_pairs.py), importable from them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
