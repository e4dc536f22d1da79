"""The ``lazyh5`` command line: ``info``, ``show``, ``bench``, ``rechunk`` and ``demo``.

One module per command, each registering its options (``add_parser``) and running it
(``run``); :mod:`lazyh5.cli.main` dispatches. ``bench`` and ``demo`` only parse their
options here: the work is in :mod:`lazyh5.bench` and :mod:`lazyh5.demo`.
"""
