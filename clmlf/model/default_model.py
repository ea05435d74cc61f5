"""Where the embedded default model lives: the package folder ``clmlf/model/default_model_files/``.

The training engineer writes the trained artifact there; this module only
resolves it and explains what to do when it is absent.
"""

from __future__ import annotations

from pathlib import Path

from clmlf.model.checkpoint_format import CONFIG_FILE, CheckpointError

DEFAULT_MODEL_DIRNAME = "default_model_files"


class DefaultModelMissing(CheckpointError):
    """The package was installed without the embedded default model."""


def default_checkpoint_dir() -> Path:
    """The embedded checkpoint directory; raises :class:`DefaultModelMissing` (one line) when absent."""
    path = Path(__file__).resolve().parent / DEFAULT_MODEL_DIRNAME
    if not (path / CONFIG_FILE).is_file():
        raise DefaultModelMissing(
            f"no embedded default model at {path}: pass --checkpoint DIR (or set CLMLF_CHECKPOINT)"
        )
    return path
