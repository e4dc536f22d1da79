# Shared by demo.sh and test.sh: a virtual environment in .venv with lazyh5 installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# The tests run torch on the CPU only. PyPI's Linux torch carries about 4 GB of CUDA libraries,
# which a CI machine's disk may not hold: take a CPU build first where pip can find one (the
# wheel on this project's CI machines); elsewhere this finds nothing and the extras bring torch.
if [[ ",$EXTRAS," == *",torch,"* ]] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==${LAZYH5_CPU_TORCH:-2.13.0+cpu}" >/dev/null 2>&1 || true
fi
.venv/bin/python -m pip install -q -e ".[$EXTRAS]"
