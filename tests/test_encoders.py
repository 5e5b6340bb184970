"""CNN14/CNN10 with PANNs' names, and the strict PANNs checkpoint loader."""

from __future__ import annotations

import pytest
import torch

from earshot.audio.features import LogMel
from earshot.config import AudioConfig
from earshot.encoders.audio import STANDARD_ENCODERS, build_audio_encoder
from earshot.encoders.panns import convert_panns_state_dict, load_panns_checkpoint
from earshot.errors import CheckpointMismatchError, ModelLoadError
from earshot.testing.models import tiny_encoder_config, tiny_model
from earshot.testing.panns import panns_checkpoint, panns_frontend

AUDIO = AudioConfig()

# Counted on PANNs' own Cnn14/Cnn10 classes (state-dict entries, without the frontend and
# fc_audioset), in a side-by-side run against qiuqiangkong/audioset_tagging_cnn.
PANNS_SIZES = {"cnn14": (79, 79_690_061), "cnn10": (55, 4_952_905)}


@pytest.mark.parametrize("name", ["cnn14", "cnn10"])
def test_standard_encoders_have_panns_names_and_sizes(name):
    with torch.device("meta"):
        enc = build_audio_encoder(STANDARD_ENCODERS[name], 64)
    state = enc.state_dict()
    assert (len(state), sum(v.numel() for v in state.values())) == PANNS_SIZES[name]
    assert state["bn0.weight"].shape == (64,)
    assert state["conv_block1.conv1.weight"].shape == (64, 1, 3, 3)
    last = len(STANDARD_ENCODERS[name].widths)
    width = STANDARD_ENCODERS[name].widths[-1]
    assert state[f"conv_block{last}.conv2.weight"].shape == (width, width, 3, 3)
    assert state[f"conv_block{last}.bn2.running_var"].shape == (width,)
    assert state["fc1.weight"].shape == (width, width)
    assert f"conv_block{last + 1}.conv1.weight" not in state


@pytest.mark.parametrize("name", ["cnn14", "cnn10"])
def test_tiny_encoder_output(name):
    enc = build_audio_encoder(tiny_encoder_config(name), 64).eval()
    logmel = LogMel(AUDIO)(torch.randn(3, 32000 * 3))
    out = enc(logmel)
    assert out.shape == (3, 16)
    assert torch.all(out >= 0)  # fc1 is followed by a ReLU, as in PANNs


def test_unknown_encoder_is_a_clear_error():
    from earshot.config import EncoderConfig

    with pytest.raises(ValueError, match=r"unknown audio encoder 'cnn99'.*cnn10, cnn14"):
        build_audio_encoder(EncoderConfig("cnn99", (4,), 4), 64)


@pytest.fixture
def writer():
    """A tiny PANNs CNN14 with non-trivial BatchNorm statistics, and its PANNs checkpoint."""
    pytest.importorskip("torchlibrosa", reason="torchlibrosa is a dev extra")
    encoder = tiny_model("cnn14", seed=3).audio_encoder.eval()
    return encoder, panns_checkpoint(encoder), panns_frontend()


def test_checkpoint_keys_are_panns_layout(writer):
    _, checkpoint, _ = writer
    keys = set(checkpoint["model"])
    assert {
        "spectrogram_extractor.stft.conv_real.weight",
        "spectrogram_extractor.stft.conv_imag.weight",
        "logmel_extractor.melW",
        "bn0.running_mean",
        "conv_block1.conv1.weight",
        "conv_block6.bn2.num_batches_tracked",
        "fc1.bias",
        "fc_audioset.weight",
    } <= keys


def test_loaded_encoder_reproduces_writer_embeddings(tmp_path, writer):
    encoder, checkpoint, (spec, logmel) = writer
    path = tmp_path / "Cnn14_tiny.pth"
    torch.save(checkpoint, path)
    x = torch.randn(2, 32000 * 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = encoder(logmel(spec(x)))  # the writer, with PANNs' own frontend
        fresh = tiny_model("cnn14", seed=99).audio_encoder.eval()
        assert not torch.allclose(fresh(LogMel(AUDIO)(x)), expected)
        load_panns_checkpoint(path, fresh, AUDIO)
        got = fresh(LogMel(AUDIO)(x))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_conversion_drops_frontend_and_classifier_only(writer):
    encoder, checkpoint, _ = writer
    converted = convert_panns_state_dict(checkpoint, AUDIO)
    assert set(converted) == set(encoder.state_dict())


def test_dataparallel_prefix_is_accepted(writer):
    encoder, checkpoint, _ = writer
    prefixed = {"model": {f"module.{k}": v for k, v in checkpoint["model"].items()}}
    assert set(convert_panns_state_dict(prefixed, AUDIO)) == set(encoder.state_dict())


def test_missing_and_unexpected_keys_are_all_named(tmp_path, writer):
    encoder, checkpoint, _ = writer
    state = dict(checkpoint["model"])
    del state["conv_block2.bn1.running_mean"]
    del state["fc1.bias"]
    state["conv_block7.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_panns_checkpoint(path, encoder, AUDIO)
    err = info.value
    assert err.missing == ["conv_block2.bn1.running_mean", "fc1.bias"]
    assert err.unexpected == ["conv_block7.conv1.weight"]
    assert "conv_block2.bn1.running_mean" in str(err) and str(path) in str(err)


def test_shape_mismatch_is_named(tmp_path, writer):
    _, checkpoint, _ = writer
    path = tmp_path / "full.pth"
    torch.save(checkpoint, path)
    wider = build_audio_encoder(tiny_encoder_config("cnn10"), 64)  # other block count and widths
    with pytest.raises(CheckpointMismatchError) as info:
        load_panns_checkpoint(path, wider, AUDIO)
    assert "conv_block6.conv1.weight" in info.value.unexpected
    assert "conv_block4.conv1.weight (8, 8, 3, 3) != (16, 8, 3, 3)" in info.value.mismatched


def test_other_frontend_is_refused(writer):
    _, checkpoint, _ = writer
    with pytest.raises(ModelLoadError, match="another log-mel frontend"):
        convert_panns_state_dict(checkpoint, AudioConfig(sample_rate=16000, fmax=8000))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "cannot read checkpoint"),
        (b"<html>not a checkpoint</html>", "cannot read checkpoint"),
    ],
)
def test_unreadable_checkpoint_files(tmp_path, writer, content, match):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match):
        load_panns_checkpoint(path, writer[0], AUDIO)


def test_missing_checkpoint_file(tmp_path, writer):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_panns_checkpoint(tmp_path / "nope.pth", writer[0], AUDIO)


class NotATensor:
    pass


def test_checkpoint_with_code_is_not_unpickled(tmp_path, writer):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "extra": NotATensor()}, path)
    with pytest.raises(ModelLoadError, match=r"re-save just its 'model' entry"):
        load_panns_checkpoint(path, writer[0], AUDIO)


def test_not_a_state_dict(tmp_path, writer):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelLoadError, match="holds a list"):
        load_panns_checkpoint(path, writer[0], AUDIO)
    torch.save({"model": {"a": 1}}, path)
    with pytest.raises(ModelLoadError, match="not a PANNs checkpoint"):
        load_panns_checkpoint(path, writer[0], AUDIO)
