#!/usr/bin/env bash
# The main job: install lazyh5 (with Keras on TensorFlow) into .venv and run the demo.
# Extra arguments go to `lazyh5 demo`, e.g. `bash scripts/demo.sh --size tiny`.
EXTRAS="keras,tensorflow,plugins,plot"
source "$(dirname "$0")/_env.sh"
exec .venv/bin/lazyh5 demo "$@"
