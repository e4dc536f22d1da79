"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lazyh5

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(lazyh5.__path__, "lazyh5.") if ".cli." not in m.name
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples create files in the working directory
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_public_functions_have_examples():
    for name in lazyh5.__all__:
        obj = getattr(lazyh5, name)
        if not (isinstance(obj, type) and issubclass(obj, BaseException)):
            assert ">>>" in (obj.__doc__ or ""), f"lazyh5.{name} has no example"
