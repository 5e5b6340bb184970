"""One rule picks the model for every command and `earshot.Index` (earshot.api.choose_model):
`--model` / $EARSHOT_MODEL, else `--random-init`, else the catalogue's own model, else the
shipped default; and whether it is trained is reported from that one answer."""

from __future__ import annotations

import json

import pytest

from earshot.api import Index, choose_model
from earshot.cli import main
from earshot.errors import EarshotError, ModelLoadError, TextEncoderMismatchError
from earshot.model.io import load_model, model_id, packaged_model_dir, save_model
from earshot.testing.audio import write_tone
from earshot.testing.models import tiny_model


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch):
    monkeypatch.delenv("EARSHOT_MODEL", raising=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_tone(tmp_path_factory.mktemp("audio") / "clip.wav", 3.0, 16000)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_text_dir):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), folder)
    return folder


@pytest.fixture(scope="module")
def misfit_dir(tmp_path_factory, tiny_text_dir):
    # The text head takes 384-d vectors; the text encoder it names gives 16-d ones.
    folder = tmp_path_factory.mktemp("misfit") / "model"
    save_model(tiny_model(text_model=str(tiny_text_dir)), folder)
    return folder


@pytest.fixture(scope="module")
def shipped_id():
    return model_id(load_model("compact", with_text=False))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_without_model_is_the_shipped_trained_model(capsys, shipped_id):
    code, out, err = run(capsys, "info", "--json")
    assert code == 0 and "UNTRAINED" not in err
    info = json.loads(out)
    assert info["untrained"] is False and info["id"] == shipped_id
    assert info["model"] == str(packaged_model_dir("compact").resolve())
    code, out, _ = run(capsys, "info")
    assert code == 0 and "UNTRAINED" not in out and "random-init" not in out


def test_info_with_model_and_random_init(capsys, model_dir):
    code, out, _ = run(capsys, "info", "--json", "--model", str(model_dir))
    info = json.loads(out)
    assert code == 0 and info["untrained"] is False and info["model"] == str(model_dir.resolve())
    code, out, err = run(capsys, "info", "--json", "--random-init", "--encoder", "cnn10")
    info = json.loads(out)
    assert code == 0 and info["untrained"] is True and "UNTRAINED" in err
    assert info["model"] == "random-init (cnn10, seed 0)"
    code, out, _ = run(capsys, "info", "--random-init")
    assert code == 0 and "(UNTRAINED)" in out


def test_embed_json_reports_trained_or_not(capsys, clip, model_dir, shipped_id):
    code, out, err = run(capsys, "embed", "--audio", str(clip), "--json")
    doc = json.loads(out)
    assert code == 0 and "UNTRAINED" not in err
    assert doc["model"]["untrained"] is False and doc["model"]["id"] == shipped_id
    code, out, _ = run(capsys, "embed", "--model", str(model_dir), "--text", "a dog", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["model"]["untrained"] is False and len(doc["results"]) == 1
    code, out, err = run(
        capsys, "embed", "--random-init", "--encoder", "cnn10", "--audio", str(clip), "--json"
    )
    assert code == 0 and json.loads(out)["model"]["untrained"] is True and "UNTRAINED" in err


def test_search_with_and_without_model(capsys, tmp_path, clip, model_dir):
    db = str(tmp_path / "c.sqlite")
    assert run(capsys, "index", str(clip), "--db", db, "--model", str(model_dir))[0] == 0
    for extra in ([], ["--model", str(model_dir)]):
        code, out, _ = run(capsys, "search", "a tone", "--db", db, "--json", *extra)
        assert code == 0 and json.loads(out)["hits"][0]["path"] == str(clip)
        code, out, _ = run(capsys, "search", "--like", str(clip), "--db", db, "--json", *extra)
        assert code == 0 and "hits" in json.loads(out)  # (the example itself is left out)
    # --random-init is another model than the catalogue's: said plainly, no traceback.
    code, _, err = run(capsys, "search", "a tone", "--db", db, "--random-init")
    assert code == 1 and err.count("earshot: error:") == 1 and "Traceback" not in err
    # A model named beats --random-init, as it does everywhere.
    code, out, _ = run(capsys, "search", "a tone", "--db", db, "--model", str(model_dir),
                       "--random-init", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["hits"]


def test_choose_model_order(monkeypatch, tmp_path, clip, model_dir):
    tiny_id = model_id(load_model(model_dir, with_text=False))
    # $EARSHOT_MODEL names the model when no argument does.
    monkeypatch.setenv("EARSHOT_MODEL", str(model_dir))
    choice = choose_model(use="audio")
    assert (model_id(choice.model), choice.untrained) == (tiny_id, False)
    assert choose_model(use="audio", random_init=True).untrained is False  # named wins
    monkeypatch.delenv("EARSHOT_MODEL")
    random = choose_model(use="audio", random_init=True, encoder="cnn10", seed=3)
    assert random.untrained is True and random.source == "random-init (cnn10, seed 3)"
    # A loaded model is used as it is.
    assert choose_model(random.model).model is random.model
    with pytest.raises(ValueError, match="use must be one of"):
        choose_model(use="text")
    # With no name, the catalogue's own model, for every use.
    with Index(tmp_path / "c.sqlite", model=str(model_dir)) as idx:
        idx.add(clip)
    with Index(tmp_path / "c.sqlite") as idx:
        assert model_id(idx.model) == tiny_id and idx.untrained is False
        for use in ("all", "audio", "query"):
            got = choose_model(catalogue=idx.catalogue, use=use)
            assert model_id(got.model) == tiny_id and not got.untrained


def test_text_encoder_that_does_not_fit_is_an_error_not_a_traceback(
    capsys, tmp_path, clip, misfit_dir
):
    code, out, err = run(capsys, "embed", "--model", str(misfit_dir), "--text", "a dog")
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.startswith("earshot: error: text model") and "16-d vectors" in err
    assert "384-d" in err
    # Indexing needs no text encoder; a text search on that catalogue does.
    db = str(tmp_path / "c.sqlite")
    assert run(capsys, "index", str(clip), "--db", db, "--model", str(misfit_dir))[0] == 0
    code, _, err = run(capsys, "search", "a dog", "--db", db)
    assert code == 1 and err.startswith("earshot: error: text model") and "16-d" in err
    with pytest.raises(TextEncoderMismatchError) as e:
        Index(tmp_path / "c.sqlite")
    assert isinstance(e.value, ModelLoadError | EarshotError) and isinstance(e.value, ValueError)


def test_a_folder_named_like_a_packaged_model_hides_it_only_if_it_is_a_model(tmp_path, monkeypatch):
    """`earshot evaluate --model general` once wrote its report to ./general/eval, and that
    folder then hid the packaged model from the next command ("'general' is not an earshot
    model folder"), the card's second regenerate command. Reports for a name now go to
    earshot-eval/NAME, and only a folder with a config.json is taken over the name."""
    from earshot.commands.train import default_report_dir
    from earshot.model.io import resolve_model_dir

    monkeypatch.chdir(tmp_path)
    assert default_report_dir("compact").parts == ("earshot-eval", "compact")
    (tmp_path / "compact" / "eval").mkdir(parents=True)  # an old report folder
    assert resolve_model_dir("compact") == packaged_model_dir("compact")
    assert default_report_dir("compact").parts == ("earshot-eval", "compact")
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    assert default_report_dir("runs/mine").parts == ("runs", "mine", "eval")
    (tmp_path / "compact" / "config.json").write_text("{}")  # a model folder of that name
    assert resolve_model_dir("compact").parts == ("compact",)
    assert default_report_dir("compact").parts == ("compact", "eval")
