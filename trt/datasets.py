"""Where the shared evaluation data lives (never committed to this project: it carries its own licences)."""

import os
from pathlib import Path

DATA_DIR_VARIABLE = "LG_DATA_DIR"
_DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def shared_data_dir() -> Path:
    """The shared data folder: ``$LG_DATA_DIR``, else ``../shared/data`` beside the project checkout."""
    return Path(os.environ.get(DATA_DIR_VARIABLE, _DEFAULT_DATA_DIR))
