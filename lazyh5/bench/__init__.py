"""``lazyh5 bench``: how fast a file feeds training, and what limits it.

- :mod:`lazyh5.bench.variables`: what the file says about each fed variable (metadata only);
- :mod:`lazyh5.bench.measure`: the timed passes (:class:`lazyh5.BatchLoader` in order and
  shuffled, a hand-written h5py loop, a single-thread h5py block read) and
  :func:`~lazyh5.bench.measure.bench`, the whole report;
- :mod:`lazyh5.bench.diagnose`: what limits the feed, and the recommended layout;
- :mod:`lazyh5.bench.render`: the report as text.

The command line (:mod:`lazyh5.cli.bench`) parses its options and calls them.
"""
