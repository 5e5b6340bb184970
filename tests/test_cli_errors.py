"""Every user-caused error prints `earshot: error: ...` (or argparse's `earshot CMD: error:`),
exits non-zero and shows no traceback: each command fed a missing file, a non-audio file, a bad
--db, a bad number, a bad --model folder or a malformed config. In-process through main(argv);
one case by subprocess to check the real entry point."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from earshot.cli import main

ERROR_LINE = re.compile(r"^earshot( [\w-]+)?: error: ", re.M)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.wav").write_text("these are notes, not sound\n")
    (d / "garbage.db").write_bytes(b"not a sqlite file at all\n" * 40)
    (d / "broken.toml").write_text('dataset = "x\nepochs = [1, \n')
    (d / "nomodel").mkdir()
    (d / "badmodel").mkdir()
    (d / "badmodel" / "config.json").write_text("{not json")
    (d / "folder").mkdir()
    (d / "folder" / "notes.wav").write_text("not sound")
    (d / "queries.txt").write_text("a dog\n")
    return d


def cases(d):
    missing = str(d / "missing.wav")
    notes = str(d / "notes.wav")
    garbage = str(d / "garbage.db")
    folder = str(d / "folder")
    under_a_file = str(d / "notes.wav" / "cat.db")  # its folder is a file
    nomodel = str(d / "nomodel")
    return {
        "embed a bare sentence": ["embed", "a dog barks"],
        "embed a bare file": ["embed", notes, "--json"],
        "embed missing file": ["embed", "--audio", missing],
        "embed non-audio": ["embed", "--audio", notes],
        "embed bad number": ["embed", "--text", "hi", "--batch-size", "many"],
        "embed zero batch": ["embed", "--text", "hi", "--batch-size", "0"],
        "embed missing model": ["embed", "--text", "hi", "--model", str(d / "no-such-model")],
        "embed empty model folder": ["embed", "--text", "hi", "--model", str(d / "nomodel")],
        "embed broken model config": ["embed", "--text", "hi", "--model", str(d / "badmodel")],
        "index missing path": ["index", str(d / "gone"), "--db", str(d / "i1.db")],
        "index garbage db": ["index", folder, "--db", garbage],
        "index db is a folder": ["index", folder, "--db", folder],
        "index db under a file": ["index", folder, "--db", under_a_file],
        "index bad workers": ["index", folder, "--workers", "x"],
        "index negative workers": ["index", folder, "--db", str(d / "i3.db"), "--workers", "-1"],
        "index bad model": ["index", folder, "--db", str(d / "i2.db"), "--model", nomodel],
        "search garbage db": ["search", "a dog", "--db", garbage],
        "search db is a folder": ["search", "a dog", "--db", folder],
        "search missing db": ["search", "a dog", "--db", str(d / "never-made" / "cat.db")],
        "search db under a file": ["search", "a dog", "--db", under_a_file],
        "search bad k": ["search", "a dog", "-k", "ten"],
        "search bad duration": ["search", "a dog", "--min-duration", "long"],
        "search like missing": ["search", "--like", missing, "--db", garbage],
        "search queries missing": ["search", "--queries", str(d / "no.txt"), "--db", garbage],
        "skipped garbage db": ["skipped", "--db", garbage],
        "skipped db is a folder": ["skipped", "--db", folder],
        "serve bad port": ["serve", "--port", "eighty"],
        "info missing model": ["info", "--model", str(d / "no-such-model")],
        "info broken model config": ["info", "--model", str(d / "badmodel")],
        "init-model missing panns": ["init-model", str(d / "out1"), "--panns", missing],
        "init-model non-checkpoint panns": ["init-model", str(d / "out2"), "--panns", notes],
        "init-model bad dim": ["init-model", str(d / "out3"), "--joint-dim", "wide"],
        "init-model tag power alone": ["init-model", str(d / "out4"), "--tag-power", "1"],
        "init-model zero tag power": [
            "init-model", str(d / "out5"), "--efficientat", "mn04", "--tag-power", "0",
        ],
        "train malformed toml": ["train", "--config", str(d / "broken.toml")],
        "train missing toml": ["train", "--config", str(d / "missing.toml")],
        "train bad number": ["train", "--epochs", "several"],
        "train zero tag power": ["train", "--tag-power", "0"],
        "evaluate missing model": [
            "evaluate", "--model", str(d / "no-such-model"), "--dataset", folder,
            "--split", "validation",
        ],
        "evaluate missing dataset": [
            "evaluate", "--model", str(d / "badmodel"), "--dataset", str(d / "nodata"),
            "--split", "validation",
        ],
        "weights unknown id": ["weights", "path", "no-such-weights"],
        "weights unknown action": ["weights", "frobnicate"],
    }  # fmt: skip


CASES = sorted(cases(Path("/D")))


def _run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    except BaseException as e:  # a traceback: what this test exists to catch
        pytest.fail(f"earshot {' '.join(argv)} raised {type(e).__name__}: {e}")
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("name", CASES)
def test_user_error_is_one_line_not_a_traceback(name, bad, capsys, monkeypatch):
    monkeypatch.setenv("EARSHOT_DB", str(bad / "default.db"))
    argv = cases(bad)[name]
    rc, err = _run(argv, capsys)
    assert rc not in (0, None), f"{name}: exit status {rc}\n{err}"
    assert "Traceback" not in err, err
    assert ERROR_LINE.search(err), f"{name}: no 'earshot: error:' line in\n{err}"


def test_embed_says_which_flag_a_bare_argument_needs(bad, capsys):
    _, err = _run(["embed", "a dog barks"], capsys)
    assert "write --text before 'a dog barks'" in err
    _, err = _run(["embed", str(bad / "notes.wav")], capsys)
    assert f"write --audio before {bad / 'notes.wav'}" in err


def test_entry_point_prints_no_traceback(bad):
    out = subprocess.run(
        [sys.executable, "-m", "earshot.cli", "search", "a dog", "--db", str(bad / "garbage.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert out.stderr.startswith("earshot: error:"), out.stderr
    assert "Traceback" not in out.stderr


def test_damaged_checkpoint_refuses_resume_with_an_earshot_error(tmp_path):
    from types import SimpleNamespace

    from earshot.errors import EarshotError
    from earshot.train.checkpoint import CHECKPOINT, resume

    (tmp_path / CHECKPOINT).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(EarshotError, match="not a whole earshot checkpoint"):
        resume(SimpleNamespace(out=tmp_path, device="cpu"))
