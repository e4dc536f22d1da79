"""The ``lazyh5 demo`` run: the h5py and Keras 2 recipe, redone with lazyh5, on generated images.

- :mod:`lazyh5.demo.images`: the coloured-shape images and their ten classes;
- :mod:`lazyh5.demo.report`: what each step prints (progress bars, rates, peak memory) and
  the :class:`~lazyh5.demo.report.Report` the summary is drawn from;
- :mod:`lazyh5.demo.model`: the small Keras network and its training from the file;
- :mod:`lazyh5.demo.plot`: the ``summary.png`` figure;
- :mod:`lazyh5.demo.run`: the steps, in order (:func:`~lazyh5.demo.run.run_demo`).

The command line (``lazyh5 demo``, :mod:`lazyh5.cli.demo`) parses its options and calls
:func:`~lazyh5.demo.run.run_demo`.
"""
