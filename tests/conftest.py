import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never touch the network: the hub is off for every model load in the suite.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without --model, commands use the general model where its backbone resolves (../shared is
# beside the repo in CI). The suite pins the compact one, so results do not depend on that;
# tests of the choice itself (test_general_model.py) lift the pin.
os.environ.setdefault("EARSHOT_DEFAULT_MODEL", "compact")
# The suite writes its caches (remembered model ids, synthetic demo sounds) into a folder of
# its own, never the user's; weights still resolve from ../shared.
if "EARSHOT_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="earshot-test-cache-")
    os.environ["EARSHOT_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory) -> Path:
    from earshot.testing.models import write_tiny_text_model

    return write_tiny_text_model(tmp_path_factory.mktemp("tiny-text") / "text")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_text_dir) -> Path:
    """A tiny model folder (production code, random weights) around the tiny text encoder.

    Shared by the whole session: tests must not write into it (copy it first if they do)."""
    from earshot.model.io import save_model
    from earshot.testing.models import tiny_model

    folder = tmp_path_factory.mktemp("tiny-model") / "model"
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), folder)
    return folder


@pytest.fixture(scope="session")
def pool_experiment():
    """scripts/pool_experiment.py (a script, not a package module) loaded by path."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "pool_experiment.py"
    spec = importlib.util.spec_from_file_location("pool_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fake_backbone(tmp_path_factory):
    """(folder, (backbone WeightsRef, labels WeightsRef)): a fake EfficientAT checkpoint and its
    class list (earshot.testing.backbone), for general-model tests that need no real weights."""
    from earshot.testing.backbone import write_fake_backbone

    folder = tmp_path_factory.mktemp("weights")
    return folder, write_fake_backbone(folder)


@pytest.fixture
def weights_env(fake_backbone, monkeypatch, tmp_path):
    """The fake backbone resolvable ($EARSHOT_WEIGHTS_DIR), a fresh cache; its WeightsRefs."""
    monkeypatch.setenv("EARSHOT_WEIGHTS_DIR", str(fake_backbone[0]))
    monkeypatch.setenv("EARSHOT_CACHE_DIR", str(tmp_path / "cache"))
    return fake_backbone[1]
