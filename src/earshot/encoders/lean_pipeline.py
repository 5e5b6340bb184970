"""Which sentence-transformers folders `encoders.lean_text` runs exactly, read from the folder's
own files: `modules.json` (BERT → mean pooling → optional Normalize, nothing else), the pooling
and BERT configs (every key known and neutral: no prompts, no Dense layer, the activations and
position embeddings BERT's), and `tokenizer.json` against `tokenizer_config.json` (BERT's
WordPiece pipeline, lower-casing as the config says, the pad token). `read_pipeline` returns
what the encoder needs or raises `LeanUnsupported` saying why; `lean_problem` is that reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from earshot.errors import LeanUnsupported

_BERT_KEYS = {
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "max_position_embeddings",
    "position_embedding_type",
    "type_vocab_size",
    "vocab_size",
}
# sentence_bert_config.json keys that change nothing here (with the values that do so).
_SBERT_NEUTRAL = {
    "transformer_task": ("feature-extraction",),
    "module_output_name": ("token_embeddings",),
}
_TRANSFORMER_TYPES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.base.modules.transformer.Transformer",
}
_POOLING_TYPES = {
    "sentence_transformers.models.Pooling",
    "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
}
_NORMALIZE_TYPES = {
    "sentence_transformers.models.Normalize",
    "sentence_transformers.base.modules.normalize.Normalize",
    "sentence_transformers.sentence_transformer.modules.normalize.Normalize",
}
# safetensors dtype → NumPy. Float32 only for weights: sentence-transformers would run a float16
# file in float16, which these float32 sums would not reproduce. (int64: BERT's position_ids.)


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LeanUnsupported(f"no {path.name} in '{path.parent}'") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LeanUnsupported(f"cannot read '{path}': {e}") from None


def read_pipeline(folder: Path) -> dict:
    """What the folder's sentence-transformers pipeline is, where it is one this module runs
    exactly: BERT → mean pooling → optional Normalize. Else `LeanUnsupported` saying why."""
    if not (folder / "modules.json").is_file():
        raise LeanUnsupported(f"'{folder}' is not a sentence-transformers folder (no modules.json)")
    modules = _read_json(folder / "modules.json")
    types = [m.get("type") for m in modules] if isinstance(modules, list) else []
    if (
        len(types) not in (2, 3)
        or types[0] not in _TRANSFORMER_TYPES
        or modules[0].get("path", "") != ""
        or types[1] not in _POOLING_TYPES
        or (len(types) == 3 and types[2] not in _NORMALIZE_TYPES)
    ):
        raise LeanUnsupported(
            f"'{folder}': modules {types} are not Transformer, Pooling[, Normalize]"
        )
    pooling = _read_json(folder / modules[1].get("path", "1_Pooling") / "config.json")
    modes = pooling.get("pooling_mode")
    if modes is None:  # the sentence-transformers < 6 form: one flag per mode
        modes = [
            k[len("pooling_mode_") :]
            for k, v in pooling.items()
            if k.startswith("pooling_mode_") and v
        ]
        modes = ["mean" if m == "mean_tokens" else m for m in modes]
    if isinstance(modes, str):
        modes = [modes]
    if list(modes) != ["mean"]:
        raise LeanUnsupported(f"'{folder}': pooling {modes}, not mean")

    config = _read_json(folder / "config.json")
    if (
        config.get("model_type") != "bert"
        or config.get("hidden_act") != "gelu"
        or config.get("position_embedding_type", "absolute") != "absolute"
        or not _BERT_KEYS - {"position_embedding_type"} <= set(config)
    ):
        raise LeanUnsupported(f"'{folder}': config.json is not a plain BERT with GELU")

    sbert = _read_json(folder / "sentence_bert_config.json")
    extra = {
        k
        for k, v in sbert.items()
        if k not in ("max_seq_length", "do_lower_case", "modality_config")
        and v not in _SBERT_NEUTRAL.get(k, ())
    }
    text_modality = {"method": "forward", "method_output_name": "last_hidden_state"}
    if extra or sbert.get("modality_config", {"text": text_modality}) != {"text": text_modality}:
        raise LeanUnsupported(
            f"'{folder}': sentence_bert_config.json sets {sorted(extra) or 'modality_config'}"
        )
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file():
        st = _read_json(st_config)
        # A prompt is added only when named, by the caller (never here) or by default.
        default = st.get("default_prompt_name")
        if default and (st.get("prompts") or {}).get(default):
            raise LeanUnsupported(f"'{folder}': the model adds prompts to sentences")

    tokenizer_config = _read_json(folder / "tokenizer_config.json")
    tok = _read_json(folder / "tokenizer.json")
    _check_tokenizer(folder, tok, tokenizer_config, bool(sbert.get("do_lower_case")))
    if sbert.get("max_seq_length") is not None:
        max_length = int(sbert["max_seq_length"])
    else:
        # sentence-transformers: the tokenizer's model_max_length, capped by the positions.
        max_length = min(
            int(tokenizer_config.get("model_max_length", 10**30)),
            int(config["max_position_embeddings"]),
        )
    if max_length > int(config["max_position_embeddings"]):
        raise LeanUnsupported(f"'{folder}': max_seq_length {max_length} exceeds the positions")
    pad_id = _token_id(tok, tokenizer_config.get("pad_token", "[PAD]"))
    return {
        "config": config,
        "normalize": len(types) == 3,
        "max_length": max_length,
        "pad_id": pad_id if pad_id is not None else int(config.get("pad_token_id") or 0),
    }


def _token_id(tok: dict, token) -> int | None:
    if isinstance(token, dict):
        token = token.get("content")
    for added in tok.get("added_tokens", []):
        if added.get("content") == token:
            return int(added["id"])
    return (tok.get("model") or {}).get("vocab", {}).get(token)


def _check_tokenizer(folder: Path, tok: dict, cfg: dict, lower_input: bool) -> None:
    """The tokenizer.json must be what transformers' BertTokenizer builds from its config: a
    BertNormalizer with the config's flags, [CLS] A [SEP], WordPiece, right-side truncation."""
    if cfg.get("tokenizer_class") not in ("BertTokenizer", "BertTokenizerFast"):
        raise LeanUnsupported(f"'{folder}': tokenizer {cfg.get('tokenizer_class')}, not BERT's")
    normalizer = tok.get("normalizer") or {}
    want = {
        "type": "BertNormalizer",
        "clean_text": True,
        "handle_chinese_chars": cfg.get("tokenize_chinese_chars", True),
        "strip_accents": cfg.get("strip_accents"),
        "lowercase": cfg.get("do_lower_case", True),
    }
    if normalizer != want or (lower_input and not want["lowercase"]):
        raise LeanUnsupported(f"'{folder}': tokenizer.json's normalizer differs from its config")
    post = tok.get("post_processor") or {}
    single = [
        (s.get("SpecialToken") or {}).get("id") or (s.get("Sequence") or {}).get("id")
        for s in post.get("single", [])
    ]
    if (
        (tok.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer"
        or (tok.get("model") or {}).get("type") != "WordPiece"
        or single != [cfg.get("cls_token", "[CLS]"), "A", cfg.get("sep_token", "[SEP]")]
        or cfg.get("truncation_side", "right") != "right"
        or cfg.get("padding_side", "right") != "right"
    ):
        raise LeanUnsupported(f"'{folder}': tokenizer.json is not BERT's WordPiece pipeline")


def lean_problem(folder: str | Path) -> str | None:
    """None where `LeanTextEncoder` runs the folder's model exactly, else why not."""
    try:
        read_pipeline(Path(folder))
    except LeanUnsupported as e:
        return str(e)
    return None
