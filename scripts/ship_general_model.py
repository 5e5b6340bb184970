"""Ship a retrained general model: copy its heads into the package and record its figures.

    python scripts/ship_general_model.py runs/general
    python scripts/ship_general_model.py runs/offline --name offline --baseline compact

(`--name offline`: the general model's student, configs/offline.toml, into
src/earshot/models/offline/, whole: its encoder is ours.)

Copies config.json + model.safetensors (our two heads; the backbone is named in config.json,
never copied) into src/earshot/models/general/, scores it with `earshot evaluate` on the test
splits of configs/general-data.toml (the sfx pool's held-out recordings and zero-shot labels,
the instrument clips, the urban sounds and the digits, with label queries and real-caption
queries) and configs/default-data.toml (the compact model's held-out set, for the in-domain
comparison), writes src/earshot/models/general/heldout.json (read by
tests/test_general_card.py) and prints the figures for MODEL_CARD-general.md. Needs ../shared.
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
MODELS = REPO / "src" / "earshot" / "models"
N_BOOT = 1000
SETS = {"general": "general-data.toml", "in_domain": "default-data.toml"}


def evaluate(model: str, recipe: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            str(Path(sys.executable).parent / "earshot"),
            "evaluate",
            "--model",
            model,
            "--dataset",
            str(REPO / "configs" / recipe),
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
        return json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)


def summary(report: dict) -> dict:
    """The figures the card states: per query set, overall and per source."""
    out = {}
    for prefix in ("held_out_", "held_out_captions_"):
        t2a = report.get(prefix + "text_to_audio")
        if t2a is None:
            continue
        entry = {
            "mAP@10": t2a["mAP@10"]["value"],
            "R@1": t2a["R@1"]["value"],
            "R@10": t2a["R@10"]["value"],
            "class_prompt_accuracy": report[prefix + "class_prompts"]["accuracy"]["value"],
            "queries": report[prefix + "queries"],
        }
        for key, value in report.items():
            if key.startswith(prefix + "source "):
                entry[key.removeprefix(prefix)] = {
                    "mAP@10": value["mAP@10"]["value"],
                    "class_prompt_accuracy": value["class_prompt_accuracy"]["value"],
                }
        out[prefix.rstrip("_")] = entry
    return out | by_example(report)


def by_example(report: dict) -> dict:
    """Search by example's figures (each labelled test clip as the example), where the
    report has them: overall and per source."""
    found = report.get("held_out_search_by_example")
    if found is None:
        return {}
    entry = {key: found[key]["value"] for key in ("mAP@10", "R@1", "R@10")}
    entry["examples"] = found["examples"]
    for key, value in found.items():
        if key.startswith("source "):
            entry[key] = {"mAP@10": value["mAP@10"]["value"], "examples": value["examples"]}
    return {"held_out_search_by_example": entry}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the training output folder, e.g. runs/general")
    ap.add_argument("--baseline", help="a model folder (or packaged name) to score beside it")
    ap.add_argument(
        "--name", default="general", choices=("general", "offline"), help="the packaged model"
    )
    args = ap.parse_args()
    target = MODELS / args.name
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(args.run / name, target / name)
    shipped: dict = {"n_boot": N_BOOT, "sets": {}}
    for name, recipe in SETS.items():
        report = evaluate(args.name, recipe)
        shipped["model_id"] = report["model_id"]
        shipped["sets"][name] = {"recipe": recipe, **summary(report)}
        if args.baseline:
            shipped["sets"][name]["baseline"] = summary(evaluate(args.baseline, recipe))
        shipped["sets"][name]["report"] = report
    (target / "heldout.json").write_text(json.dumps(shipped, indent=1) + "\n")
    print(f"model id {shipped['model_id']}")
    for name, entry in shipped["sets"].items():
        print(name, json.dumps({k: v for k, v in entry.items() if k != "report"}, indent=1))


if __name__ == "__main__":
    main()
