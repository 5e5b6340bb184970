"""Third-party weights that a model folder names but never stores.

A model's `config.json` names each file it needs from elsewhere (an EfficientAT backbone, the
AudioSet labels) by a `WeightsRef`: id, file name, sha256, size, upstream URL. The file itself
is never committed, copied into the repository or converted. At run time `resolve_weights`
finds it, in this order, and checks every file it finds against the sha256 before use:

1. an explicit path (argument), then `$EARSHOT_WEIGHTS_DIR/<file>` (or `.../<subdir>/<file>`);
2. the user's cache: `user_cache_dir("earshot")/weights/<id>/<file>` (`$EARSHOT_CACHE_DIR`
   replaces the root);
3. the development copy `../shared/weights/<subdir>/<file>` beside a source checkout
   (`$EARSHOT_SHARED_DIR` names that `shared/` folder instead);
4. a download from the URL into the cache: streamed to `<file>.part`, resumed with a Range
   request, size and sha256 checked, fsync'ed and renamed into place atomically;
5. else a `ModelLoadError` naming the file, every place looked, the URL and the env var.

Offline (`EARSHOT_OFFLINE=1` or `HF_HUB_OFFLINE=1`), or when the first connection fails, step 4
fails at once instead of retrying. A found file whose hash is wrong is an error where the user
chose it (argument, env var) and is skipped (deleted, in the cache) elsewhere.

An entry without a sha256 ("unpinned") cannot be verified against a known value: it still
downloads, with a warning carrying the sha256 it got, and that hash is recorded beside the
cached file (`<file>.sha256`) so later loads of the cached copy are checked against it. Copies
found elsewhere are used with a warning that they could not be verified.

An entry may also carry the publisher's md5 (Zenodo publishes md5, not sha256): it is checked
like the sha256, and an entry with either is pinned.

Hashing costs ~5 ms per 4 MB here, so every load re-hashes; there is no verification cache.

Checkpoints that live on the Hugging Face hub (CLAP) are not single files: `resolve_hub` finds
a repository's snapshot in the local hub cache (downloading it only where the network is
allowed) and fails with the same shape of message as `resolve_weights`; `KNOWN_HUB` lists the
ones earshot knows, beside `KNOWN_WEIGHTS`, for `earshot weights`.
"""

from earshot.weights.fetch import ATTEMPTS, RETRY_WAIT_S, TIMEOUT_S, download
from earshot.weights.hub import (
    HUB_PATTERNS,
    KNOWN_HUB,
    HubRef,
    hub_cache_dir,
    is_hub_id,
    locate_hub,
    resolve_hub,
)
from earshot.weights.labels import AUDIOSET_CLASSES, read_audioset_labels
from earshot.weights.refs import (
    ENV_CACHE_DIR,
    ENV_OFFLINE,
    ENV_SHARED_DIR,
    ENV_WEIGHTS_DIR,
    KNOWN_WEIGHTS,
    WeightsRef,
    known_weights,
)
from earshot.weights.resolve import locate, resolve_weights
from earshot.weights.store import cache_dir, cache_root, check_file, sha256_file, shared_dir

__all__ = [
    "ATTEMPTS",
    "AUDIOSET_CLASSES",
    "ENV_CACHE_DIR",
    "ENV_OFFLINE",
    "ENV_SHARED_DIR",
    "ENV_WEIGHTS_DIR",
    "HUB_PATTERNS",
    "KNOWN_HUB",
    "KNOWN_WEIGHTS",
    "RETRY_WAIT_S",
    "TIMEOUT_S",
    "HubRef",
    "WeightsRef",
    "cache_dir",
    "cache_root",
    "check_file",
    "download",
    "hub_cache_dir",
    "is_hub_id",
    "known_weights",
    "locate",
    "locate_hub",
    "read_audioset_labels",
    "resolve_hub",
    "resolve_weights",
    "sha256_file",
    "shared_dir",
]
