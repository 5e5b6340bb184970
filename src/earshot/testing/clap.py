"""A tiny random CLAP checkpoint, written at test time (never committed), for tests and benches.

`write_tiny_clap(dir)` saves, with transformers' own `save_pretrained`, a folder that
`ClapModel` / `ClapProcessor` / `AutoTokenizer` load like a hub checkpoint: a small random
`ClapConfig` (a shallow HTSAT at the real input size: 64 mels, spec_size 256, so 10 s windows
at 48 kHz; a two-layer RoBERTa), a byte-level BPE tokenizer trained here by `tokenizers` on a
few sentences and saved as the RoBERTa tokenizer CLAP's processor uses, and the feature
extractor of laion/clap-htsat-unfused (`rand_trunc`, 50-14000 Hz) or, with `fusion=True`,
of a fused checkpoint (`fusion`, HTK mels, `enable_fusion`). `scaled_clap_config()` is the
real HTSAT-unfused architecture (random weights), for the CPU benchmark.
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = (
    "a dog barks",
    "a dog barks twice in the distance",
    "rain falls on a tin roof",
    "a siren wails in the street",
    "birds sing in the morning",
    "a car passes by on a wet road",
    "the sound of running water",
    "a bell rings",
    "a low hum of an engine",
    "people talk in a busy room",
)


def tiny_tokenizer():
    """A byte-level BPE tokenizer with RoBERTa's special tokens, trained on `SENTENCES`."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(SENTENCES) * 4,
        vocab_size=320,
        min_frequency=1,
        special_tokens=specials,
        show_progress=False,
    )
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    return RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=77,
    )


def tiny_clap_config(vocab_size: int, fusion: bool = False, projection_dim: int = 16):
    from transformers import ClapConfig

    audio = dict(
        hidden_size=64,
        patch_embeds_hidden_size=8,
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 2, 2],
        window_size=8,
        enable_fusion=fusion,
    )
    if fusion:
        audio["fusion_type"] = "aff_2d"
    text = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
    )
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=projection_dim)


def scaled_clap_config():
    """laion/clap-htsat-unfused's architecture: HTSAT-tiny (depths 2-2-6-2, 96 → 768) and a
    RoBERTa-base text tower, 512-d projections; transformers' defaults are that model."""
    from transformers import ClapConfig

    return ClapConfig(audio_config=dict(enable_fusion=False), projection_dim=512)


def clap_feature_extractor(fusion: bool = False):
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        frequency_min=50, frequency_max=14000, truncation="fusion" if fusion else "rand_trunc"
    )


def write_tiny_clap(
    directory: str | Path, seed: int = 0, fusion: bool = False, config=None
) -> Path:
    """Write a random CLAP checkpoint folder (save_pretrained layout) and return its path.

    The same seed writes the same weights. `config`: another `ClapConfig` (its text
    vocabulary must fit the tiny tokenizer's, 320)."""
    import torch
    from transformers import ClapModel, ClapProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    if config is None:
        config = tiny_clap_config(len(tokenizer), fusion=fusion)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config).eval()
        # Non-trivial BatchNorm statistics, so a load that dropped them would show.
        bn = model.audio_model.audio_encoder.batch_norm
        bn.running_mean.uniform_(-20.0, -5.0)
        bn.running_var.uniform_(50.0, 150.0)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(directory)
        processor = ClapProcessor(
            feature_extractor=clap_feature_extractor(fusion), tokenizer=tokenizer
        )
        processor.save_pretrained(directory)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return directory
