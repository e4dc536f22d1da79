#!/usr/bin/env bash
# The test suite: install lazyh5 with its test extras into .venv, lint, run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k open`.
EXTRAS="test,keras,tensorflow,jax,torch,distributed,plugins,docs,remote"
source "$(dirname "$0")/_env.sh"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Every extra is installed: a test that would skip for a missing package fails instead.
export LAZYH5_REQUIRE_EXTRAS=1
# A crash of a subprocess the tests start (Keras, torch workers) prints its Python stacks.
export PYTHONFAULTHANDLER=1
exec .venv/bin/python -m pytest "$@"
