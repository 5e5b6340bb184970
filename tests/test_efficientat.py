"""EfficientAT's MobileNetV3 taggers (mn04, mn10) and their front end.

Without weights: the architecture's names and shapes, forward shapes, determinism, the
checkpoint loader's key checks, and the front end against an independent numpy computation.
With ../shared (the pretrained mn04 and real clips): a strict load and upstream's own outputs,
recorded in tests/data/efficientat_mn04_golden.json by running upstream's code (outside this
repository) on the same samples.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from earshot.audio.efficientat_frontend import (
    EfficientAtLogMel,
    build_frontend,
    efficientat_mel_matrix,
    kaldi_mel_banks,
)
from earshot.audio.features import LogMel
from earshot.config import EFFICIENTAT_AUDIO, AudioConfig, EncoderConfig, ModelConfig
from earshot.encoders.audio import STANDARD_AUDIO, STANDARD_ENCODERS, build_audio_encoder
from earshot.encoders.efficientat import (
    EfficientAtMN,
    load_efficientat_checkpoint,
    make_divisible,
    mn_encoder_config,
)
from earshot.errors import CheckpointMismatchError
from earshot.testing.audio import chirp_mix

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "efficientat"
CHECKPOINT = WEIGHTS / "mn04_as_mAP_432.pt"
KEYS_FILE = WEIGHTS / "mn04_keys.txt"
LABELS_FILE = WEIGHTS / "class_labels_indices.csv"
DATA = SHARED / "data"
GOLDEN = json.loads((Path(__file__).parent / "data" / "efficientat_mn04_golden.json").read_text())

# Per bottleneck, derived by hand from upstream's table and rounding rule:
# (expanded, out, kernel, squeeze width or 0 without SE); an expansion conv exists iff
# expanded != the block's input width (the previous block's out; the stem's for the first).
MN04 = {
    "stem": 8,
    "blocks": [
        (8, 8, 3, 0), (24, 16, 3, 0), (32, 16, 3, 0), (32, 16, 5, 8), (48, 16, 5, 16),
        (48, 16, 5, 16), (96, 32, 3, 0), (80, 32, 3, 0), (72, 32, 3, 0), (72, 32, 3, 0),
        (192, 48, 3, 48), (272, 48, 3, 72), (272, 64, 5, 72), (384, 64, 5, 96),
        (384, 64, 5, 96),
    ],
    "embed": 384,
    "hidden": 512,
}  # fmt: skip
MN10 = {
    "stem": 16,
    "blocks": [
        (16, 16, 3, 0), (64, 24, 3, 0), (72, 24, 3, 0), (72, 40, 5, 24), (120, 40, 5, 32),
        (120, 40, 5, 32), (240, 80, 3, 0), (200, 80, 3, 0), (184, 80, 3, 0), (184, 80, 3, 0),
        (480, 112, 3, 120), (672, 112, 3, 168), (672, 160, 5, 168), (960, 160, 5, 240),
        (960, 160, 5, 240),
    ],
    "embed": 960,
    "hidden": 1280,
}  # fmt: skip


def expected_shapes(spec: dict, n_tags: int = 527) -> dict[str, tuple[int, ...]]:
    """Every state-dict tensor of upstream's MN at this spec, in upstream's order."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, out: int, inp: int, k: int) -> None:
        shapes[f"{prefix}.0.weight"] = (out, inp, k, k)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.1.{name}"] = (out,)
        shapes[f"{prefix}.1.num_batches_tracked"] = ()

    conv_bn("features.0", spec["stem"], 1, 3)
    inp = spec["stem"]
    for i, (exp, out, k, se) in enumerate(spec["blocks"], start=1):
        j = 0
        if exp != inp:
            conv_bn(f"features.{i}.block.{j}", exp, inp, 1)
            j += 1
        conv_bn(f"features.{i}.block.{j}", exp, 1, k)
        j += 1
        if se:
            p = f"features.{i}.block.{j}.conc_se_layers.0"
            shapes.update({f"{p}.fc1.weight": (se, exp), f"{p}.fc1.bias": (se,)})
            shapes.update({f"{p}.fc2.weight": (exp, se), f"{p}.fc2.bias": (exp,)})
            j += 1
        conv_bn(f"features.{i}.block.{j}", out, exp, 1)
        inp = out
    conv_bn(f"features.{len(spec['blocks']) + 1}", spec["embed"], inp, 1)
    shapes["classifier.2.weight"] = (spec["hidden"], spec["embed"])
    shapes["classifier.2.bias"] = (spec["hidden"],)
    shapes["classifier.5.weight"] = (n_tags, spec["hidden"])
    shapes["classifier.5.bias"] = (n_tags,)
    return shapes


@pytest.fixture(scope="module")
def mn04() -> EfficientAtMN:
    torch.manual_seed(0)
    return build_audio_encoder(STANDARD_ENCODERS["mn04"], 128).eval()


# -- architecture, without weights ---------------------------------------------------------


def test_make_divisible_follows_the_mobilenet_rule():
    assert [make_divisible(v) for v in (6.4, 9.6, 28.8, 73.6, 18, 512)] == [8, 16, 32, 72, 24, 512]


@pytest.mark.parametrize("name, spec", [("mn04", MN04), ("mn10", MN10)])
def test_state_dict_names_and_shapes(name, spec):
    enc = build_audio_encoder(STANDARD_ENCODERS[name], 128)
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    want = expected_shapes(spec)
    assert list(got) == list(want)  # names and upstream's order
    assert got == want
    assert len(got) == 312
    assert enc.embed_dim == spec["embed"] and enc.n_tags == 527
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)
    n_params = sum(p.numel() for p in enc.parameters())
    assert n_params == {"mn04": 983_599, "mn10": 4_876_831}[name]  # upstream: 0.98 M, 4.88 M


def test_state_dict_matches_the_checkpoint_key_list():
    if not KEYS_FILE.is_file():
        pytest.skip(f"{KEYS_FILE} absent: the hand-derived shapes above are the check")
    rows = [line.split("\t") for line in KEYS_FILE.read_text().splitlines() if line]
    state = build_audio_encoder(STANDARD_ENCODERS["mn04"], 128).state_dict()
    assert [r[0] for r in rows] == list(state)
    for key, shape, dtype in rows:
        assert (shape, dtype) == (str(tuple(state[key].shape)), str(state[key].dtype)), key


def test_standard_configs():
    assert mn_encoder_config("mn04") == EncoderConfig("mn04", (), 384, width=0.4, n_tags=527)
    assert STANDARD_ENCODERS["mn10"] == EncoderConfig("mn10", (), 960, width=1.0, n_tags=527)
    assert STANDARD_AUDIO["mn04"] == EFFICIENTAT_AUDIO
    with pytest.raises(ValueError, match="384-d embedding"):
        build_audio_encoder(EncoderConfig("mn04", (), 512, width=0.4, n_tags=527), 128)
    with pytest.raises(ValueError, match="width-0.4 model"):
        build_audio_encoder(EncoderConfig("mn04", (), 960, width=1.0, n_tags=527), 128)


def test_forward_shapes_and_determinism(mn04):
    x = torch.randn(3, 1, 128, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        emb, logits = mn04(x)
        emb2, logits2 = mn04(x)
        one_emb, one_logits = mn04(x[:1])
    assert emb.shape == (3, 384) and logits.shape == (3, 527)
    assert one_emb.shape == (1, 384) and one_logits.shape == (1, 527)  # no squeezed batch
    assert torch.equal(emb, emb2) and torch.equal(logits, logits2)
    assert torch.allclose(one_logits, logits[:1], atol=1e-5)
    with torch.no_grad():  # `augment` acts on the network's input
        masked = mn04(x, augment=lambda t: torch.zeros_like(t))[1]
        zeros = mn04(torch.zeros_like(x))[1]
    assert torch.equal(masked, zeros)
    with pytest.raises(ValueError, match="batch, 1, n_mels, frames"):
        mn04(x[:, 0])


def test_mn10_forward_shapes():
    enc = build_audio_encoder(STANDARD_ENCODERS["mn10"], 128).eval()
    with torch.no_grad():
        emb, logits = enc(torch.randn(2, 1, 128, 100))
    assert emb.shape == (2, 960) and logits.shape == (2, 527)


def test_loader_names_missing_and_misshaped_keys(mn04, tmp_path):
    state = {k: v.clone() for k, v in mn04.state_dict().items()}
    good = tmp_path / "good.pt"
    torch.save(state, good)
    other = build_audio_encoder(STANDARD_ENCODERS["mn04"], 128)
    load_efficientat_checkpoint(good, other)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())

    del state["features.4.block.2.conc_se_layers.0.fc1.bias"]
    state["classifier.5.weight"] = torch.zeros(10, 512)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointMismatchError) as err:
        load_efficientat_checkpoint(bad, other)
    assert err.value.missing == ["features.4.block.2.conc_se_layers.0.fc1.bias"]
    assert "classifier.5.weight (10, 512) != (527, 512)" in str(err.value)


# -- front end, without weights -----------------------------------------------------------


def reference_logmel(x: np.ndarray) -> np.ndarray:
    """EfficientAT's eval front end in float64 numpy, written out independently: explicit
    framing and rfft, a per-filter loop for the Kaldi filterbank."""
    sr, n_fft, hop, win, n_mels, fmin, fmax = 32000, 1024, 320, 800, 128, 0.0, 15000.0
    x = x.astype(np.float64)
    y = x[1:] - 0.97 * x[:-1]
    y = np.pad(y, n_fft // 2, mode="reflect")
    n = np.arange(win)
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * n / (win - 1))
    frames = 1 + (len(y) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(y[idx] * window, axis=1)) ** 2  # (frames, 513)

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    edges = np.linspace(mel(fmin), mel(fmax), n_mels + 2)
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, mid, hi = edges[m : m + 3]
        for k in range(n_fft // 2):
            b = mel(k * sr / n_fft)
            if lo < b <= mid:
                fb[m, k] = (b - lo) / (mid - lo)
            elif mid < b < hi:
                fb[m, k] = (hi - b) / (hi - mid)
    return (np.log(fb @ power.T + 1e-5) + 4.5) / 5.0  # (n_mels, frames)


def test_filterbank_against_a_per_filter_loop():
    banks64 = kaldi_mel_banks(128, 1024, 32000, 0.0, 15000.0, torch.float64).numpy()
    edges = np.linspace(0.0, 1127.0 * math.log(1.0 + 15000.0 / 700.0), 130)
    bin_mel = 1127.0 * np.log(1.0 + np.arange(512) * 31.25 / 700.0)
    for m in (0, 1, 63, 127):
        lo, mid, hi = edges[m : m + 3]
        tri = np.clip(np.minimum((bin_mel - lo) / (mid - lo), (hi - bin_mel) / (hi - mid)), 0, 1)
        np.testing.assert_allclose(banks64[m], tri, atol=1e-12)
    assert banks64.shape == (128, 512) and banks64.max() <= 1.0
    # Nothing above 15 kHz (bin 480; float32 rounding leaves 9e-6 on bin 480 itself, as in
    # upstream's matrix), and the padded Nyquist column is zero.
    matrix = efficientat_mel_matrix(EFFICIENTAT_AUDIO).numpy()
    assert matrix.shape == (128, 513) and matrix.dtype == np.float32
    assert not banks64[:, 480:].any() and not matrix[:, 481:].any()
    assert matrix[:, 480].max() < 1e-5
    # float32 (upstream's own rounding) stays within 2e-5 of the exact filterbank
    assert np.abs(matrix[:, :512] - banks64).max() < 2e-5


def test_frontend_against_an_independent_computation():
    x = chirp_mix(2.0, 32000, seed=3)
    fe = build_frontend(EFFICIENTAT_AUDIO)
    assert isinstance(fe, EfficientAtLogMel)
    ref = reference_logmel(x)
    out64 = fe(torch.from_numpy(x)[None].double())
    out32 = fe(torch.from_numpy(x)[None])
    assert out64.shape == out32.shape == (1, 1, 128, 1 + (len(x) - 1) // 320) == (1, 1, 128, 200)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out64[0, 0].numpy(), ref, atol=1e-9)
    assert np.abs(out32[0, 0].double().numpy() - ref).max() < 1e-3  # float32 rounding
    # Window: symmetric Hann (periodic=False) of 800 samples.
    w = fe.window64.numpy()
    assert w.shape == (800,) and w[0] == 0 and w[-1] == 0 and np.allclose(w, w[::-1])
    ten = fe(torch.from_numpy(chirp_mix())[None])
    assert ten.shape == (1, 1, 128, 1000)
    with pytest.raises(ValueError, match="too short"):
        fe(torch.zeros(1, 400))


@pytest.mark.parametrize("rows, chunk", [(5, 2), (5, 1), (4, 4), (3, 8)])
def test_frontend_rows_are_the_same_in_any_chunk(rows, chunk, monkeypatch):
    # The front end computes its rows `chunk_rows` at a time to stay in the CPU's caches: a
    # speed setting only, so every row must equal the whole batch computed at once, bit for bit.
    fe = build_frontend(EFFICIENTAT_AUDIO)
    x = torch.from_numpy(np.stack([chirp_mix(2.0, 32000, seed=s) for s in range(rows)]))
    monkeypatch.setattr(fe, "chunk_rows", rows)
    whole = fe(x)
    monkeypatch.setattr(fe, "chunk_rows", chunk)
    parts = fe(x)
    assert parts.shape == whole.shape == (rows, 1, 128, 200)
    assert torch.equal(parts, whole)
    # float64 rows likewise, to rounding: on some CPUs (a 2-core Xeon with AMX) float64 kernels
    # round a row of a 2-row batch 1 ulp (4e-16) apart from the same row alone; float32, what
    # earshot decodes to, is bit-equal above on every CPU we ran.
    torch.testing.assert_close(fe(x.double())[:1], fe(x[:1].double()), rtol=0, atol=1e-12)


# -- configuration ----------------------------------------------------------------------


def test_existing_configs_serialise_unchanged():
    d = ModelConfig().to_dict()
    assert "frontend" not in d["audio"] and "win_length" not in d["audio"]
    assert "width" not in d["encoder"] and "n_tags" not in d["encoder"]
    assert list(d["audio"]) == [
        "sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "window_s", "hop_s",
    ]  # fmt: skip
    mn = ModelConfig(audio=EFFICIENTAT_AUDIO, encoder=STANDARD_ENCODERS["mn04"])
    d = json.loads(json.dumps(mn.to_dict()))
    assert d["audio"]["frontend"] == "efficientat" and d["audio"]["win_length"] == 800
    assert d["encoder"]["width"] == 0.4 and d["encoder"]["n_tags"] == 527
    assert ModelConfig.from_dict(d) == mn
    assert isinstance(build_frontend(AudioConfig()), LogMel)
    with pytest.raises(ValueError, match="unknown audio frontend"):
        AudioConfig(frontend="mfcc")
    with pytest.raises(ValueError, match="win_length"):
        AudioConfig(win_length=2048)


def test_shipped_model_id_is_unchanged():
    from earshot.model.io import load_model, model_id

    assert model_id(load_model("default", with_text=False)) == "0145ede9237288ff"


def test_joint_model_builds_the_efficientat_frontend():
    from earshot.model.dual import JointModel

    model = JointModel(ModelConfig(audio=EFFICIENTAT_AUDIO, encoder=STANDARD_ENCODERS["mn04"]))
    assert isinstance(model.frontend, EfficientAtLogMel)
    assert isinstance(model.audio_encoder, EfficientAtMN)


# -- with the pretrained weights and real clips -------------------------------------------


@pytest.fixture(scope="module")
def pretrained() -> EfficientAtMN:
    if not CHECKPOINT.is_file():
        pytest.skip(
            f"pretrained mn04 not found at {CHECKPOINT} (../shared/weights beside the repo)"
        )
    enc = build_audio_encoder(STANDARD_ENCODERS["mn04"], 128)
    load_efficientat_checkpoint(CHECKPOINT, enc)
    return enc.eval()


def labels() -> list[str]:
    import csv

    with LABELS_FILE.open(newline="") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


def run(enc: EfficientAtMN, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fe = build_frontend(EFFICIENTAT_AUDIO)
    with torch.no_grad():
        logmel = fe(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])
        return logmel[0, 0].double().numpy(), enc(logmel)[1][0].double().numpy()


def check_golden(logmel: np.ndarray, logits: np.ndarray, golden: dict) -> None:
    stats = golden["logmel"]
    assert list(logmel.shape) == stats["shape"]
    for name, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
        assert abs(fn(logmel) - stats[name]) < 1e-4, name
    for b, v in stats["bin_means"].items():
        assert abs(logmel[int(b)].mean() - v) < 1e-4, b
    diff = np.abs(logits - np.array(golden["logits"])).max()
    assert diff < 1e-4, f"logits differ from upstream's by {diff:.2e}"


@pytest.mark.realdata
def test_checkpoint_is_the_golden_one(pretrained):
    digest = hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest()
    assert digest == GOLDEN["checkpoint"]["sha256"]
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert {k: v.shape for k, v in state.items()} == {
        k: v.shape for k, v in pretrained.state_dict().items()
    }


@pytest.mark.realdata
def test_synthetic_signal_matches_upstream(pretrained):
    g = GOLDEN["synthetic"]
    assert g["generator"] == "earshot.testing.audio.chirp_mix"
    x = chirp_mix(**g["kwargs"])
    assert len(x) == g["n_samples"]
    check_golden(*run(pretrained, x), g)


@pytest.mark.realdata
@pytest.mark.parametrize("clip", sorted(GOLDEN["clips"]))
def test_real_clips_match_upstream(pretrained, clip):
    from earshot.audio.io import load

    path = DATA / clip
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared/data beside the repo)")
    g = GOLDEN["clips"][clip]
    x = load(path, GOLDEN["sample_rate"])
    assert len(x) == g["n_samples"]
    logmel, logits = run(pretrained, x)
    check_golden(logmel, logits, g)
    top = labels()[int(np.argmax(logits))]
    expected = {
        "urbansound8k-derived/audio/101415-3-0-2.ogg": {"Dog", "Bark", "Animal"},
        "sfx-pool/berklee/police_siren1.ogg": {"Emergency vehicle", "Siren", "Police car (siren)"},
        "sfx-pool/animalia/animalia_cow.ogg": {"Moo", "Cattle, bovinae"},
    }[clip]
    assert top in expected, f"{clip}: top tag {top}"


@pytest.mark.realdata
def test_real_checkpoint_mismatch_names_the_key(pretrained, tmp_path):
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    del state["classifier.5.bias"]
    state["features.0.0.weight"] = state["features.0.0.weight"][:4]
    bad = tmp_path / "mn04_bad.pt"
    torch.save(state, bad)
    enc = build_audio_encoder(STANDARD_ENCODERS["mn04"], 128)
    with pytest.raises(CheckpointMismatchError) as err:
        load_efficientat_checkpoint(bad, enc)
    assert err.value.missing == ["classifier.5.bias"]
    assert "features.0.0.weight (4, 1, 3, 3) != (8, 1, 3, 3)" in str(err.value)
