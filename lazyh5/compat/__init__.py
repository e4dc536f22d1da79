"""Compatibility with code written for Keras 2: :class:`HDF5Matrix` and :func:`fit_kwargs`."""

from .hdf5matrix import HDF5Matrix, fit_kwargs

__all__ = ["HDF5Matrix", "fit_kwargs"]
