"""lmtrain: LSTM language models trained with sampled softmax, evaluated with the full softmax.

`lmtrain.load(run_dir)` gives a trained model to score text, generate and export (see
`lmtrain.use.api`). TensorFlow is imported on first use, so `import lmtrain` and `lmtrain --help`
stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from lmtrain.use.api import TrainedModel


def load(run_dir: "str | Path") -> "TrainedModel":
    """Load the latest checkpoint of a run directory written by `lmtrain fit`."""
    from lmtrain.keras.tfboot import import_tensorflow

    import_tensorflow()  # without its start-up notices on a machine with no GPU
    from lmtrain.use.api import load as _load

    return _load(run_dir)


__all__ = ["load", "__version__"]
