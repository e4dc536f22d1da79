"""The ``lazyh5`` command line: ``info`` (and ``demo``), one module per command."""
