#!/usr/bin/env bash
# The test suite against the oldest versions pyproject.toml declares.
#
# Creates .venv-min/ (git-ignored; removed and recreated on every run), installs lazyh5
# there with a constraints file that pins every `>=` lower bound of the runtime
# dependencies and of the runtime extras (keras, tensorflow, jax, distributed, plugins,
# plot) to exactly that version, lets the test and docs tools resolve to versions
# compatible with those pins, then runs pytest. Extra arguments go to pytest, e.g.
# `bash scripts/check-minimums.sh -k keras`. Slow (a fresh install of TensorFlow and JAX):
# not part of .ci/run. Set KEEP_VENV=1 to reuse an existing .venv-min/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-min
PINNED_EXTRAS="keras tensorflow jax distributed plugins plot"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "${KEEP_VENV:-0}" != 1 ] || [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi

# name==lower-bound for every `name>=x` of the runtime dependencies and pinned extras
# (environment markers kept, extras dropped: constraints cannot name extras).
"$PY" - "$PINNED_EXTRAS" >"$VENV/constraints.txt" <<'EOF'
import re, sys, tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[1].split():
    reqs += project["optional-dependencies"][extra]
pins = {}
for req in reqs:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*>=\s*([^,;\s]+)\s*(;.*)?", req)
    if m is None:
        sys.exit(f"check-minimums: cannot read a lower bound from {req!r}")
    name, _, version, marker = m.groups()
    line = f"{name}=={version}" + (f" {marker.strip()}" if marker else "")
    if pins.setdefault(name.lower(), line) != line:
        sys.exit(f"check-minimums: {name} has two lower bounds: {pins[name.lower()]}, {line}")
print("\n".join(sorted(pins.values())))
EOF
echo "== pinned to the declared minimums ($VENV/constraints.txt):"
sed 's/^/   /' "$VENV/constraints.txt"

EXTRAS="test,docs,${PINNED_EXTRAS// /,}"
"$VENV/bin/python" -m pip install --progress-bar off -c "$VENV/constraints.txt" -e ".[$EXTRAS]"
"$VENV/bin/python" -m pip check

# Fail loudly if anything was resolved away from a pin (pip honours constraints; say so).
"$VENV/bin/python" - "$VENV/constraints.txt" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

from packaging.markers import Marker
from packaging.version import Version

bad = []
for line in open(sys.argv[1]):
    spec, _, marker = line.strip().partition(";")
    name, want = spec.strip().split("==")
    if marker and not Marker(marker).evaluate():
        continue
    try:
        got = version(name)
    except PackageNotFoundError:
        bad.append(f"{name} not installed")
        continue
    if Version(got) != Version(want):
        bad.append(f"{name} {got} != {want}")
sys.exit("check-minimums: " + "; ".join(bad) if bad else 0)
EOF

echo "== installed versions:"
"$VENV/bin/python" -m pip list --format=freeze 2>/dev/null |
    grep -iE '^(numpy|h5py|dask|distributed|xarray|pandas|keras|tensorflow-cpu|jax|jaxlib|ml-dtypes|h5netcdf|hdf5plugin|numcodecs|imagecodecs|matplotlib|tqdm|pytest|hypothesis)==' |
    sed 's/^/   /'

exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
