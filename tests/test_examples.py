"""The scripts in ``examples/`` and the notebook run, each in a fresh process, on small data."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
N = "2000"  # images per generated file: enough for every script, quick to write


def run_example(
    script: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 120
) -> str:
    """Run ``examples/<script>`` in ``tmp_path``; returns stdout + stderr, fails on exit != 0."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--n", N, "--dir", str(tmp_path), *args],
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} exited with {proc.returncode}:\n{output[-4000:]}"
    return output


def test_interactive_analysis(tmp_path):
    out = run_example("interactive_analysis.py", tmp_path)
    assert "<xarray.Dataset>" in out and "HDF5 chunks of image: (" in out
    # The generated images' brightness encodes the label: ~20 per class, increasing.
    table = out.split("mean brightness per class")[1]
    means = [float(m) for m in re.findall(r"^\s*\d\s+([\d.]+)$", table, re.M)]
    assert len(means) == 10
    assert all(18 < b - a < 22 for a, b in itertools.pairwise(means))


def test_preprocess(tmp_path):
    out = run_example("preprocess.py", tmp_path)
    m = re.search(r"written mean (-?[\d.]+), std ([\d.]+)", out)
    assert m, out[-2000:]
    assert abs(float(m[1])) < 1e-3 and abs(float(m[2]) - 1) < 1e-3  # normalised
    assert (tmp_path / "images_float32.h5").exists()


@pytest.mark.keras
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_train_keras(tmp_path, backend):
    pytest.importorskip("keras")
    pytest.importorskip(backend)
    out = run_example("train_keras.py", tmp_path, "--epochs", "3", env={"KERAS_BACKEND": backend})
    m = re.search(rf"backend {backend}: val accuracy ([\d.]+)", out)
    assert m, out[-2000:]
    assert 0 <= float(m[1]) <= 1
    losses = [float(x) for x in re.findall(r" loss: ([\d.]+)", out)]  # one per epoch
    assert len(losses) == 3 and all(0 < x < 10 for x in losses), out[-2000:]
    assert losses[-1] < losses[0], losses  # it learns from the batches it is fed


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")
def test_train_torch_with_workers_stopped_and_resumed(tmp_path):
    pytest.importorskip("torch")
    out = run_example("train_torch.py", tmp_path, "--epochs", "2", "--stop-after", "10")
    stopped = float(re.search(r"stopped after step 10 \(loss ([\d.]+)\)", out)[1])
    out = run_example("train_torch.py", tmp_path, "--epochs", "2", "--resume")
    assert "resumed in epoch 0" in out
    steps = [int(s) for s in re.findall(r"epoch \d: (\d+) steps", out)]
    # with torchdata's StatefulDataLoader the interrupted epoch carries on at step 11
    assert steps == ([15, 25] if importlib.util.find_spec("torchdata") else [25, 25]), out
    losses = [float(x) for x in re.findall(r"mean loss ([\d.]+)", out)]
    assert losses[-1] < stopped < 2.4  # it learns: from ~2.3 (10 classes) down
    assert 0.3 < float(re.search(r"val accuracy ([\d.]+)", out)[1]) <= 1


@pytest.mark.distributed
def test_dask_cluster(tmp_path):
    pytest.importorskip("distributed")
    out = run_example("dask_cluster.py", tmp_path, timeout=180)
    assert "processes=2" in out
    assert re.search(r"\d+ images of class 3; mean brightness [\d.]+", out)
    assert (tmp_path / "images_float32_distributed.h5").exists()


# The notebook: code cells run in order in one fresh interpreter, in a temporary folder;
# like Jupyter, a cell's last expression is printed.
NOTEBOOK_RUNNER = textwrap.dedent(
    """
    import ast, json, sys

    notebook = json.load(open(sys.argv[1], encoding="utf-8"))
    scope = {"__name__": "__main__"}
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]), filename=f"<cell {number}>")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, f"<cell {number}>", "exec"), scope)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), f"<cell {number}>", "eval"), scope)
            if value is not None:
                print(repr(value))
        print(f"--- cell {number} done", flush=True)
    """
)


def test_notebook_is_valid_nbformat_4():
    nb = json.loads((EXAMPLES / "interactive_analysis.ipynb").read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int)
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    assert nb["cells"][0]["cell_type"] == "markdown"
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["source"], list)
        assert isinstance(cell["metadata"], dict) and isinstance(cell.get("id"), str)
        if cell["cell_type"] == "code":  # stored without outputs, to stay small
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_notebook_runs(tmp_path):
    pytest.importorskip("matplotlib")
    proc = subprocess.run(
        [sys.executable, "-c", NOTEBOOK_RUNNER, str(EXAMPLES / "interactive_analysis.ipynb")],
        cwd=tmp_path,
        env={**os.environ, "MPLBACKEND": "Agg", "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "<xarray.Dataset>" in out  # the lazy Dataset's repr
    assert "'disc'" in out or "'ring'" in out  # labels of the slice, by class name
    # The grouped lazy reduction: vertical stripes change along x, horizontal ones along y.
    v = re.search(r"v-stripes\s+([\d.]+)\s+([\d.]+)", out)
    h = re.search(r"h-stripes\s+([\d.]+)\s+([\d.]+)", out)
    assert v and h, out[-3000:]
    assert float(v[1]) > 1.5 * float(v[2]) and float(h[2]) > 1.5 * float(h[1])
    assert "rows 100..107 inverted in images.h5" in out  # the write-back, checked in the cell
    assert list(tmp_path.glob("lazyh5-notebook-*/images.h5"))  # self-contained, in TMPDIR


def test_remote(tmp_path):
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    out = run_example("remote.py", tmp_path)
    m = re.search(r"uploaded .*images\.h5 to (s3://lazyh5-demo/\w+/images\.h5)", out)
    assert m, out[-2000:]
    assert f"accuracy from {m[1]}: " in out
    accuracy = float(re.search(r"accuracy from s3://\S+: ([\d.]+)", out)[1])
    assert accuracy > 0.9  # brightness encodes the label: the classifier learned it
    assert "127.0.0.1 - -" not in out  # the server's request log is off
