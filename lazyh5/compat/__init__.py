"""Compatibility with code written for Keras 2: :class:`HDF5Matrix`, and
:func:`fit_kwargs`, :func:`evaluate_kwargs` and :func:`predict_kwargs` to stream it
through Keras 3's ``fit``, ``evaluate`` and ``predict``."""

from .hdf5matrix import HDF5Matrix
from .streaming import evaluate_kwargs, fit_kwargs, predict_kwargs

__all__ = ["HDF5Matrix", "evaluate_kwargs", "fit_kwargs", "predict_kwargs"]
