"""Checkpoints on the Hugging Face hub (CLAP): `KNOWN_HUB`, finding a repository's snapshot in
the local hub cache and, where the network is allowed, downloading it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from earshot.errors import ModelLoadError
from earshot.weights.store import _offline_reason

# -- checkpoints on the Hugging Face hub --------------------------------------------------------


@dataclass(frozen=True)
class HubRef:
    """A model repository on the Hugging Face hub that earshot knows how to use (CLAP)."""

    repo_id: str
    licence: str = ""
    description: str = ""


KNOWN_HUB: dict[str, HubRef] = {
    ref.repo_id: ref
    for ref in (
        HubRef(
            "laion/clap-htsat-unfused",
            "Apache-2.0",
            "LAION-CLAP, HTSAT-tiny audio + RoBERTa text, 512-d joint space, no feature fusion",
        ),
        HubRef(
            "laion/clap-htsat-fused",
            "Apache-2.0",
            "LAION-CLAP, HTSAT-tiny with feature fusion (earshot's 10 s windows never fuse)",
        ),
        HubRef(
            "laion/larger_clap_general",
            "Apache-2.0",
            "LAION-CLAP, larger HTSAT, trained on general audio, music and speech",
        ),
    )
}

# What a CLAP checkpoint folder needs; the rest of a hub repository (other weight formats,
# README) is not fetched.
HUB_PATTERNS = ("*.json", "*.txt", "*.safetensors", "*.model")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_id(name: str) -> bool:
    """Whether `name` reads as a hub repository id (`owner/name`) rather than a path."""
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps repositories: $HF_HUB_CACHE, else $HF_HOME/hub, else its
    default (~/.cache/huggingface/hub); read now, not when huggingface_hub was imported."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_hub(
    repo_id: str, revision: str | None = None, allow_download: bool = True
) -> tuple[Path, str]:
    """The local snapshot folder of a hub repository and its commit hash.

    The local hub cache first (never a network call); then, where downloading is allowed and
    not switched off (EARSHOT_OFFLINE, HF_HUB_OFFLINE), a download of the files a checkpoint
    needs; else a `ModelLoadError` naming the repository, where it looked and how to get it.
    A download that fails for want of a network fails at once (no minute of retries).
    """
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if not _HUB_ID.match(repo_id):
        raise ModelLoadError(f"'{repo_id}' is neither a folder nor a hub id (owner/name)")
    cache = hub_cache_dir()
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    looked = [f"Hugging Face cache: {folder} ({'no snapshot' if folder.exists() else 'absent'})"]
    try:
        path = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=True,
            allow_patterns=list(HUB_PATTERNS),
        )
        return Path(path), _snapshot_commit(Path(path), revision)
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    except (OSError, ValueError) as e:
        looked[0] = f"Hugging Face cache: {folder} (unreadable: {e})"
    if not allow_download:
        raise _hub_missing(repo_id, revision, looked, "downloading was not allowed")
    offline = _offline_reason()
    if offline:
        raise _hub_missing(repo_id, revision, looked, f"downloading is off ({offline})")
    try:
        # One quick attempt: no network means a fast failure, not a minute of retries.
        path = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            allow_patterns=list(HUB_PATTERNS),
            etag_timeout=10,
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        looked.append(f"download from the hub: {repo_id} (failed)")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.removeprefix("Got: ")
        raise _hub_missing(repo_id, revision, looked, f"the download failed: {first}") from None
    return Path(path), _snapshot_commit(Path(path), revision)


def _snapshot_commit(path: Path, revision: str | None) -> str:
    # A cached snapshot's folder is named by its commit hash.
    name = path.name
    return name if re.fullmatch(r"[0-9a-f]{40}", name) else (revision or name)


def _hub_missing(
    repo_id: str, revision: str | None, looked: list[str], reason: str
) -> ModelLoadError:
    at = f" at revision {revision}" if revision else ""
    lines = [
        f"hub checkpoint '{repo_id}'{at} is not in the local Hugging Face cache, and {reason}.",
        "Looked in:",
        *(f"  - {place}" for place in looked),
        "To fix it, on a machine with network run",
        f"  earshot weights fetch {repo_id}",
        f"(or `hf download {repo_id}`), then copy {hub_cache_dir()} here or set $HF_HUB_CACHE "
        "to it; or pass the checkpoint as a local folder (a save_pretrained folder with "
        "config.json, model.safetensors and the processor files).",
    ]
    return ModelLoadError("\n".join(lines))


def locate_hub(repo_id: str) -> Path | None:
    """The cached snapshot of `repo_id`, or None (for listings; never downloads)."""
    try:
        return resolve_hub(repo_id, allow_download=False)[0]
    except ModelLoadError:
        return None
