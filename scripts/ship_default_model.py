"""Ship a retrained default model: copy it into the package and record its held-out figures.

    python scripts/ship_default_model.py runs/default

Copies config.json + model.safetensors into src/earshot/models/default/, scores the test split
of configs/default-data.toml with its held-out queries (as `earshot evaluate` does), writes
src/earshot/models/default/heldout.json (read by tests/test_default_model.py) and prints the
figures for MODEL_CARD.md. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "src" / "earshot" / "models" / "default"
N_BOOT = 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the training output folder, e.g. runs/default")
    args = ap.parse_args()
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(args.run / name, TARGET / name)
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            str(Path(sys.executable).parent / "earshot"),
            "evaluate",
            "--model",
            "default",
            "--dataset",
            str(REPO / "configs" / "default-data.toml"),
            "--split",
            "test",
            "--json",
            "--out",
            out,
            "--cache-dir",
            str(REPO / ".earshot-cache"),
            "--n-boot",
            str(N_BOOT),
        ]
        report = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
    t2a = report["held_out_text_to_audio"]
    shipped = {
        "model_id": report["model_id"],
        "n_boot": N_BOOT,
        "held_out_text_to_audio": {k: t2a[k]["value"] for k in ("R@1", "R@5", "R@10", "mAP@10")},
        "held_out_class_prompt_accuracy": report["held_out_class_prompts"]["accuracy"]["value"],
        "report": report,
    }
    (TARGET / "heldout.json").write_text(json.dumps(shipped, indent=1) + "\n")
    print(f"model id {report['model_id']}")
    for key in ("mAP@10", "R@1", "R@5", "R@10"):
        m = t2a[key]
        print(f"| text→audio {key} | {m['value']:.3f} | [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] |")
    acc = report["held_out_class_prompts"]["accuracy"]
    lo, hi = acc["ci95"]
    print(f"| class-prompt accuracy | {acc['value']:.3f} | [{lo:.3f}, {hi:.3f}] |")
    for key, value in report.items():
        if key.startswith("held_out_source") or key == "held_out_recordings resampled":
            print(key, json.dumps(value))
    print("by label:", json.dumps(report["held_out_mAP@10_by_label"]))
    print("accuracy by label:", json.dumps(report["held_out_accuracy_by_label"]))


if __name__ == "__main__":
    main()
