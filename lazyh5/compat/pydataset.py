"""The training ``PyDataset`` of :func:`~lazyh5.compat.fit_kwargs`: refuses ``predict``.

A shuffling loader serves its rows in a new order each epoch. Given to
``model.predict``, it would return predictions in that order, with nothing to tell
them from predictions in file order. Keras tells a ``PyDataset`` when an epoch begins
but not which of ``fit``, ``evaluate`` or ``predict`` runs it, so the dataset looks
at the call stack when an epoch begins and raises inside ``predict``.
"""

from __future__ import annotations

import sys
from types import FrameType

from ..errors import InvalidArgumentError
from ..feed.keras import LoaderPyDataset

_TRAINER_METHODS = frozenset({"fit", "evaluate", "predict"})


def keras_method(frame: FrameType | None = None) -> str | None:
    """The innermost Keras ``fit``, ``evaluate`` or ``predict`` running on this thread.

    Examples
    --------
    >>> keras_method() is None  # not called from Keras
    True
    """
    frame = sys._getframe(1) if frame is None else frame
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name in _TRAINER_METHODS and module.startswith("keras."):
            return frame.f_code.co_name
        frame = frame.f_back
    return None


class TrainingPyDataset(LoaderPyDataset):
    """A shuffling loader's ``PyDataset`` for ``fit`` (and ``evaluate``, whose totals do
    not depend on the order) that raises when Keras' ``predict`` begins an epoch on it.

    Examples
    --------
    >>> import h5py, numpy as np
    >>> from lazyh5.compat import HDF5Matrix, fit_kwargs
    >>> with h5py.File("tp.h5", "w") as f:
    ...     _ = f.create_dataset("image", data=np.zeros((100, 4), "f4"))
    >>> train = fit_kwargs(HDF5Matrix("tp.h5", "image"))["x"]
    >>> type(train).__name__, len(train)
    ('TrainingPyDataset', 4)
    """

    def on_epoch_begin(self) -> None:
        if keras_method() == "predict":
            raise InvalidArgumentError(
                f"this dataset of {self._loader._where} shuffles its rows for training "
                "(fit_kwargs with shuffle=True): predict() would return predictions in "
                "that shuffled order, not in the order of the rows. Predict with "
                "model.predict(**lazyh5.compat.predict_kwargs(x, batch_size=...)), "
                "which reads in file order"
            )
        super().on_epoch_begin()
