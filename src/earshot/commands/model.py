"""`earshot embed`, `earshot info`, `earshot init-model`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from earshot.commands.common import model_from_args, model_summary
from earshot.config import MAX_TAG_POWER
from earshot.errors import EarshotError


def cmd_embed(args: argparse.Namespace) -> int:
    from earshot.embed import embed_file

    choice = model_from_args(args, use="all" if args.text else "audio")
    model = choice.model
    summary = model_summary(choice)
    results: list[dict[str, Any]] = []
    failed = 0
    if args.text:
        vectors = model.encode_text(args.text)
        results = [
            {"text": t, "vector": v.tolist()} for t, v in zip(args.text, vectors, strict=True)
        ]
    for path in args.audio or []:
        try:
            windows = embed_file(model, path, batch_size=args.batch_size, precision=args.precision)
        except EarshotError as e:
            failed += 1
            print(f"earshot: error: {e}", file=sys.stderr)
            results.append({"file": path, "error": str(e)})
            continue
        results.append(
            {
                "file": path,
                "windows": [
                    {
                        "start": round(w.start_s, 4),
                        "end": round(w.end_s, 4),
                        "vector": w.vector.tolist(),
                    }
                    for w in windows
                ],
            }
        )
    if args.json:
        json.dump({"model": summary, "results": results}, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_embeddings(summary, results)
    return 1 if failed else 0


def _print_embeddings(summary: dict[str, Any], results: list[dict[str, Any]]) -> None:
    print(f"model {summary['id']} ({summary['encoder']}, {summary['dim']}-d)")

    def head(v: list[float]) -> str:
        return " ".join(f"{x:+.4f}" for x in v[:6]) + " ..."

    for r in results:
        if "text" in r:
            print(f"text {r['text']!r}\n  [{head(r['vector'])}]")
        elif "windows" in r:
            print(f"audio {r['file']}: {len(r['windows'])} window(s)")
            for w in r["windows"]:
                print(f"  {w['start']:8.2f}-{w['end']:8.2f} s  [{head(w['vector'])}]")


def cmd_info(args: argparse.Namespace) -> int:
    from earshot.model.dual import audio_head_inputs
    from earshot.model.io import model_id

    choice = model_from_args(args, use="audio")
    model = choice.model
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    if c.kind == "clap":
        return _info_clap(choice, n_params, args.json)
    info = {
        "id": model_id(model),
        "model": choice.source,
        "untrained": choice.untrained,
        "joint_dim": c.joint_dim,
        "audio_encoder": {
            "name": c.encoder.name,
            "widths": list(c.encoder.widths),
            "embed_dim": c.encoder.embed_dim,
            # a student's head also reads its last blocks' time statistics (pool_stats)
            "pool_stats": c.encoder.pool_stats,
            "head_inputs": audio_head_inputs(c),
            "tags": c.encoder.n_tags,
            # a general model's head also reads the tag probabilities at this power
            "tag_power": c.encoder.tag_power if c.encoder.head_tags else None,
            # A named backbone: where it comes from (never stored in the model folder)
            "weights": c.encoder.weights.to_dict() if c.encoder.weights else None,
        },
        "text_model": {"name": c.text.model, "dim": c.text.dim},
        # the audio head: linear, or linear + a residual MLP of this width (model/heads.py);
        # fusion: the teacher start's share of every cosine (model/fusion.py)
        # window_gate: the trained audio head mixed per window with its start (GatedHead)
        "heads": {
            "audio_hidden": c.audio_hidden,
            "fusion": c.fusion,
            "window_gate": dataclasses.asdict(c.window_gate) if c.window_gate else None,
        },
        "frontend": _frontend_info(c.audio),
        "windows": {"window_s": c.audio.window_s, "hop_s": c.audio.hop_s},
        "parameters": n_params,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    f = info["frontend"]
    print(f"model       {info['model']}")
    print(f"id          {info['id']}{'  (UNTRAINED)' if info['untrained'] else ''}")
    print(f"space       {c.joint_dim}-d, cosine similarity")
    head = f"head (linear + MLP, hidden {c.audio_hidden})" if c.audio_hidden else "head"
    embedding = f"{c.encoder.embed_dim}-d"
    if c.encoder.pool_stats:
        embedding += (
            f" + the last {c.encoder.pool_stats} blocks' time mean/max/std "
            f"({audio_head_inputs(c)} inputs)"
        )
    # a PANNs CNN's conv widths; an EfficientAT MobileNet's width multiplier (it has no list)
    shape = f"widths {list(c.encoder.widths)}" if c.encoder.widths else f"width {c.encoder.width:g}"
    if c.encoder.head_tags:
        power = "squared" if c.encoder.tag_power == 2 else f"to the power {c.encoder.tag_power:g}"
        embedding += f" + its {c.encoder.n_tags} tag probabilities, {power}"
    print(
        f"audio       {c.encoder.name} {shape} -> {embedding}"
        f" -> {head} -> {c.joint_dim}-d ({n_params / 1e6:.1f} M parameters in all)"
    )
    if c.fusion:
        print(
            f"heads       fused: every cosine is {1 - c.fusion:g} x the trained heads' + "
            f"{c.fusion:g} x the teacher start's"
        )
    if c.window_gate:
        g = c.window_gate
        print(
            f"heads       gated per window: the trained audio head's share is {g.low:g} + "
            f"{1 - g.low:g} x sigmoid((k - {g.tau:g}) / {g.width:g}), k the mean of the "
            f"window's {g.top} best cosines to a bank of {g.bank} training vectors; the rest "
            "is the teacher start's"
        )
    print(f"text        {c.text.model} ({c.text.dim}-d) -> head -> {c.joint_dim}-d")
    if c.encoder.weights:
        w = c.encoder.weights
        print(f"backbone    {w.id}: {w.file} ({w.licence}), named, not stored; {w.url}")
    print(
        f"frontend    {f['kind']}: {f['sample_rate']} Hz, n_fft {f['n_fft']} "
        f"(window {f['win_length']}, {f['window']}), hop {f['hop_length']}, {f['n_mels']} "
        f"mels {f['fmin']:g}-{f['fmax']:g} Hz, {f['log']}, centred reflect"
    )
    print(f"windows     {c.audio.window_s:g} s, hop {c.audio.hop_s:g} s")
    return 0


# `--panns NAME`: the official PANNs checkpoint, resolved by earshot.weights (cache, shared
# folder, verified download)
PANNS_WEIGHTS = {"cnn14": "panns-cnn14-as", "cnn10": "panns-cnn10-as"}


def cmd_init_model(args: argparse.Namespace) -> int:
    chosen = [flag for flag in ("efficientat", "clap", "panns") if getattr(args, flag, None)]
    if len(chosen) > 1:
        raise EarshotError(f"init-model takes one of --{' / --'.join(chosen)}, not several")
    if getattr(args, "revision", None) and not args.clap:
        raise EarshotError("--revision goes with --clap (a hub checkpoint's commit or tag)")
    power = getattr(args, "tag_power", 2.0)
    if power != 2.0 and not args.efficientat:
        raise EarshotError("--tag-power goes with --efficientat (the teacher space's tag weights)")
    if not 0.0 < power <= MAX_TAG_POWER:
        raise EarshotError(
            f"--tag-power must lie in (0, {MAX_TAG_POWER:g}] (2: the squares), not {power:g}"
        )
    if args.efficientat:
        return _init_teacher_model(args)
    if args.clap:
        return _init_clap_model(args)
    from earshot.config import ModelConfig, TextConfig
    from earshot.encoders.audio import STANDARD_ENCODERS
    from earshot.encoders.panns import load_panns_checkpoint
    from earshot.encoders.text import load_text_encoder
    from earshot.model.io import build_model, model_id, save_model

    encoder = args.encoder or "cnn14"
    panns = args.panns
    if panns in PANNS_WEIGHTS:
        if args.encoder and args.encoder != panns:
            raise EarshotError(
                f"--panns {panns} is a {panns}; it cannot fill --encoder {args.encoder}"
            )
        from earshot.weights import known_weights, resolve_weights

        encoder = panns
        panns = str(resolve_weights(known_weights(PANNS_WEIGHTS[panns])))
    text = load_text_encoder(args.text_model)
    config = ModelConfig(
        encoder=STANDARD_ENCODERS[encoder],
        text=TextConfig(args.text_model, text.dim),
        joint_dim=args.joint_dim,
    )
    model = build_model(config, seed=args.seed)
    if panns:
        load_panns_checkpoint(panns, model.audio_encoder, config.audio)
    save_model(model, args.out)
    print(
        f"wrote {args.out} (id {model_id(model)}): {encoder} "
        f"{'from ' + panns if panns else 'randomly initialised'}, text "
        f"{args.text_model}; the heads are untrained: train it before searching with it"
    )
    return 0


def _init_clap_model(args: argparse.Namespace) -> int:
    """A model folder naming a CLAP checkpoint (hub id or local folder), loaded once to check
    that it runs; the folder holds config.json only."""
    from earshot.encoders.clap import clap_config, describe_checkpoint, load_clap_model
    from earshot.model.io import write_config

    checkpoint, folder = describe_checkpoint(args.clap, args.revision)
    config = clap_config(checkpoint, folder)
    model = load_clap_model(config)  # fails here, not at the first index, if it cannot run
    write_config(config, args.out)
    pinned = (
        f"commit {checkpoint.revision}"
        if checkpoint.revision
        else f"{len(checkpoint.files or {})} files by sha256"
    )
    print(
        f"wrote {args.out} (id {model.model_id}): CLAP checkpoint {checkpoint.source} "
        f"({pinned}), {config.joint_dim}-d, {config.audio.sample_rate} Hz audio in "
        f"{config.audio.window_s:g} s windows (hop {config.audio.hop_s:g} s). The folder "
        "names the checkpoint and does not hold it"
    )
    return 0


def _init_teacher_model(args: argparse.Namespace) -> int:
    """A model folder on EfficientAT's AudioSet backbone whose heads compute the teacher space:
    the no-training baseline the general model is measured against. With the text encoder's
    own width as joint_dim (`--joint-dim 384` for MiniLM) it is exactly Σ p^k · sentence(tag),
    k = `--tag-power` (2 by default); narrower, the same through a PCA basis of the tag
    sentences."""
    from earshot.encoders.text import load_text_encoder
    from earshot.model.dual import JointModel
    from earshot.model.io import model_id, save_model
    from earshot.model.pretrained import attach_backbone, pretrained_config
    from earshot.model.teacher import init_teacher_heads, pca_basis, teacher_matrix

    text = load_text_encoder(args.text_model)
    config = pretrained_config(
        args.efficientat, args.text_model, text.dim, args.joint_dim,
        tag_power=getattr(args, "tag_power", 2.0),
    )  # fmt: skip
    model = JointModel(config)
    attach_backbone(model)
    model.attach_text_encoder(text)
    teacher = teacher_matrix(model)
    basis = None if args.joint_dim == text.dim else pca_basis(teacher.numpy(), args.joint_dim)
    init_teacher_heads(model, teacher, basis)
    save_model(model, args.out)
    print(
        f"wrote {args.out} (id {model_id(model)}): the teacher space of {args.efficientat} "
        f"(AudioSet tags read as sentences by {args.text_model}); untrained heads, no training "
        f"data: the baseline a trained model must beat. The folder names the backbone "
        f"({config.encoder.weights.file}) and does not hold it"
    )
    return 0


def _info_clap(choice, n_params: int, as_json: bool) -> int:
    model = choice.model
    c = model.config
    ck = c.checkpoint
    info = {
        "id": model.model_id,
        "model": choice.source,
        "kind": "clap",
        "untrained": False,
        "joint_dim": c.joint_dim,
        "checkpoint": {"source": ck.source, "revision": ck.revision, "files": ck.files},
        "fusion": model.fusion,
        "frontend": _frontend_info(c.audio),
        "windows": {"window_s": c.audio.window_s, "hop_s": c.audio.hop_s},
        "parameters": n_params,
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    pin = f"commit {ck.revision}" if ck.revision else "local folder, files pinned by sha256"
    print(f"model       {info['model']}")
    print(f"id          {info['id']}")
    print(f"kind        CLAP through transformers: {ck.source} ({pin}), named, not stored")
    print(f"space       {c.joint_dim}-d, cosine similarity ({n_params / 1e6:.1f} M parameters)")
    f = info["frontend"]
    print(
        f"frontend    {f['kind']}: {f['sample_rate']} Hz, n_fft {f['n_fft']}, hop "
        f"{f['hop_length']}, {f['n_mels']} mels {f['fmin']:g}-{f['fmax']:g} Hz ({f['mels']}), "
        f"{f['log']}; no random crop, no random fusion"
    )
    print(f"windows     {c.audio.window_s:g} s, hop {c.audio.hop_s:g} s")
    return 0


def _frontend_info(audio) -> dict:
    common = {
        "kind": audio.frontend,
        "sample_rate": audio.sample_rate,
        "n_fft": audio.n_fft,
        "win_length": audio.win_length or audio.n_fft,
        "hop_length": audio.hop_length,
        "n_mels": audio.n_mels,
        "fmin": audio.fmin,
        "fmax": audio.fmax,
        "power": 2.0,
        "center": True,
        "pad_mode": "reflect",
    }
    if audio.frontend in ("clap", "clap_htk"):
        return {
            **common,
            "window": "hann (periodic)",
            "mels": "htk" if audio.frontend == "clap_htk" else "slaney",
            "log": "10*log10(max(x, 1e-10)) (transformers' ClapFeatureExtractor)",
        }
    if audio.frontend == "efficientat":
        return {
            **common,
            "window": "hann (symmetric)",
            "preemphasis": 0.97,
            "mels": "kaldi",
            "log": "(log(x + 1e-5) + 4.5) / 5",
        }
    return {
        **common,
        "window": "hann (periodic)",
        "mels": "slaney",
        "log": "10*log10(max(x, 1e-10))",
    }
