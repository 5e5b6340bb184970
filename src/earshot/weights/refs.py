"""What a third-party file is: `WeightsRef` (id, file, sha256 or md5, size, URL, licence) and
the entries earshot knows (`KNOWN_WEIGHTS`); the environment variables that steer resolution."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from earshot.errors import ModelLoadError

ENV_WEIGHTS_DIR = "EARSHOT_WEIGHTS_DIR"
ENV_CACHE_DIR = "EARSHOT_CACHE_DIR"
ENV_SHARED_DIR = "EARSHOT_SHARED_DIR"
ENV_OFFLINE = "EARSHOT_OFFLINE"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class WeightsRef:
    """A file from elsewhere that a model needs: what it is, how to check it, where it lives.

    `sha256` and `size` may be None for an unpinned entry (see the module docstring). `subdir`
    is the folder of the development copy under `shared/weights/`.
    """

    id: str
    file: str
    sha256: str | None
    size: int | None
    url: str
    subdir: str = ""
    licence: str = ""
    description: str = ""
    md5: str | None = None  # the publisher's checksum where it gives md5 only (Zenodo)

    def __post_init__(self) -> None:
        for field in ("id", "file"):
            value = getattr(self, field)
            if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
                raise ValueError(f"weights {field} must be a plain file name, not {value!r}")
        if self.subdir and (not _SAFE_NAME.match(self.subdir) or ".." in self.subdir):
            raise ValueError(f"weights subdir must be a plain folder name, not {self.subdir!r}")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError(f"weights '{self.id}': sha256 must be 64 lowercase hex digits")
        if self.md5 is not None and not _MD5.match(self.md5):
            raise ValueError(f"weights '{self.id}': md5 must be 32 lowercase hex digits")
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0
        ):
            raise ValueError(f"weights '{self.id}': size must be a non-negative integer")
        if not isinstance(self.url, str) or not self.url.startswith(("https://", "http://")):
            raise ValueError(f"weights '{self.id}': url must be http(s), not {self.url!r}")

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.md5 is not None

    def to_dict(self) -> dict[str, Any]:
        """The entry as config.json stores it (None fields kept, so the schema is fixed; `md5`,
        added later, only where set, so older configs and the model ids hashed from them stay)."""
        d = asdict(self)
        if d["md5"] is None:
            del d["md5"]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsRef:
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown weights field(s): {', '.join(unknown)}")
        missing = sorted({"id", "file", "url"} - set(data))
        if missing:
            raise ValueError(f"weights entry lacks: {', '.join(missing)}")
        return cls(
            id=data["id"],
            file=data["file"],
            sha256=data.get("sha256"),
            size=data.get("size"),
            url=data["url"],
            subdir=data.get("subdir") or "",
            licence=data.get("licence") or "",
            description=data.get("description") or "",
            md5=data.get("md5"),
        )


_EFFICIENTAT_RELEASE = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
_PANNS_RECORD = "https://zenodo.org/record/3987831/files/"

KNOWN_WEIGHTS: dict[str, WeightsRef] = {
    ref.id: ref
    for ref in (
        WeightsRef(
            id="efficientat-mn04-as",
            file="mn04_as_mAP_432.pt",
            sha256="899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c",
            size=4066513,
            url=_EFFICIENTAT_RELEASE + "mn04_as_mAP_432.pt",
            subdir="efficientat",
            licence="MIT",
            description="EfficientAT MobileNetV3 width 0.4, AudioSet tagger (mAP 0.432)",
        ),
        WeightsRef(
            id="efficientat-mn10-as",
            file="mn10_as_mAP_471.pt",
            sha256=None,
            size=None,
            url=_EFFICIENTAT_RELEASE + "mn10_as_mAP_471.pt",
            subdir="efficientat",
            licence="MIT",
            description="EfficientAT MobileNetV3 width 1.0, AudioSet tagger (mAP 0.471); "
            "unpinned: no checked copy, so no known sha256",
        ),
        # PANNs (Kong et al. 2020), the checkpoints its README links: Zenodo record 3987831.
        # Zenodo publishes each file's md5 and size, not a sha256; no copy was downloaded here
        # to compute one, so these are pinned by the publisher's md5 and size.
        WeightsRef(
            id="panns-cnn14-as",
            file="Cnn14_mAP-0.431.pth",
            sha256=None,
            md5="541141fa2ee191a88f24a3219fff024e",
            size=327428481,
            url=_PANNS_RECORD + "Cnn14_mAP%3D0.431.pth?download=1",
            subdir="panns",
            licence="MIT (code), CC BY 4.0 (weights, Zenodo 3987831)",
            description="PANNs CNN14, AudioSet tagger (mAP 0.431), 32 kHz log-mel input; "
            "pinned by Zenodo's md5 and size (no sha256 computed here)",
        ),
        WeightsRef(
            id="panns-cnn10-as",
            file="Cnn10_mAP-0.380.pth",
            sha256=None,
            md5="bfb1f1f9968938fa8ef4012b8471f5f6",
            size=25237595,
            url=_PANNS_RECORD + "Cnn10_mAP%3D0.380.pth?download=1",
            subdir="panns",
            licence="MIT (code), CC BY 4.0 (weights, Zenodo 3987831)",
            description="PANNs CNN10, AudioSet tagger (mAP 0.380), 32 kHz log-mel input; "
            "pinned by Zenodo's md5 and size (no sha256 computed here)",
        ),
        WeightsRef(
            id="audioset-labels",
            file="class_labels_indices.csv",
            sha256="cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429",
            size=14675,
            url="https://raw.githubusercontent.com/fschmid56/EfficientAT/main/metadata/"
            "class_labels_indices.csv",
            subdir="efficientat",
            licence="CC BY 4.0 (AudioSet labels)",
            description="the 527 AudioSet classes in EfficientAT's output order",
        ),
    )
}


def known_weights(weights_id: str) -> WeightsRef:
    """The registry entry for `weights_id`, or a ModelLoadError listing the known ids."""
    try:
        return KNOWN_WEIGHTS[weights_id]
    except KeyError:
        raise ModelLoadError(
            f"unknown weights '{weights_id}'; known: {', '.join(sorted(KNOWN_WEIGHTS))}"
        ) from None
