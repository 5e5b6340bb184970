"""The import layers docs/architecture.md promises: data below train and eval, and eval
never pulling in train (a script scoring a model must not need the training code).

Each group is imported together in one fresh interpreter: if the modules of a group together
load nothing of a layer, none of them does alone."""

import subprocess
import sys

EVAL = ("earshot.eval.evaluate", "earshot.eval.mixtures", "earshot.eval.queries")
DATA = ("earshot.data.datasets", "earshot.data.cache", "earshot.data.recipe", "earshot.data.splits")


def _imported_after(modules: tuple[str, ...]) -> set[str]:
    code = (
        f"import sys, {', '.join(modules)}; "
        "print(' '.join(m for m in sys.modules if m.startswith('earshot.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_eval_does_not_import_train():
    loaded = _imported_after(EVAL)
    assert set(EVAL) <= loaded
    assert not {m for m in loaded if m.startswith("earshot.train")}


def test_data_imports_neither_train_nor_eval():
    loaded = _imported_after(DATA)
    assert set(DATA) <= loaded
    assert not {m for m in loaded if m.startswith(("earshot.train", "earshot.eval"))}
