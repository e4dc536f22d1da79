"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import lazyh5


def _has_examples(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    with open(spec.origin, encoding="utf-8") as f:
        return ">>>" in f.read()


# Only modules with examples: a module without one would pass on import alone.
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(lazyh5.__path__, "lazyh5.")
    if ".cli." not in m.name and _has_examples(m.name)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples create files in the working directory
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"doctest found none of the examples in {name}"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_public_functions_have_examples():
    for name in lazyh5.__all__:
        obj = getattr(lazyh5, name)
        if not (isinstance(obj, type) and issubclass(obj, BaseException)):
            assert ">>>" in (obj.__doc__ or ""), f"lazyh5.{name} has no example"
