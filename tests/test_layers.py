"""The import layers docs/architecture.md promises: data below train and eval, and eval
never pulling in train (a script scoring a model must not need the training code)."""

import subprocess
import sys

import pytest


def _imported_after(module: str) -> set[str]:
    code = (
        f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('earshot.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


@pytest.mark.parametrize(
    "module",
    ["earshot.eval.evaluate", "earshot.eval.mixtures", "earshot.eval.queries"],
)
def test_eval_does_not_import_train(module):
    loaded = _imported_after(module)
    assert module in loaded
    assert not {m for m in loaded if m.startswith("earshot.train")}


@pytest.mark.parametrize(
    "module",
    ["earshot.data.datasets", "earshot.data.cache", "earshot.data.recipe", "earshot.data.splits"],
)
def test_data_imports_neither_train_nor_eval(module):
    loaded = _imported_after(module)
    assert module in loaded
    assert not {m for m in loaded if m.startswith(("earshot.train", "earshot.eval"))}
