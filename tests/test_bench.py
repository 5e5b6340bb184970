"""bench/bench_model.py --quick runs end to end and reports every figure; no timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = ("frontend", "cnn14_fp32", "cnn14_fast", "cnn10_fp32", "cnn10_bf16")
FORMATS = ("wav_44k_stereo_pcm16", "ogg_vorbis_22k_mono", "flac_48k_stereo_pcm24")


def positive_stats(stats: dict) -> None:
    assert set(stats) == {"median", "min", "max"}
    assert 0 < stats["min"] <= stats["median"] <= stats["max"]


def run_quick(script: str, *extra: str, env: dict | None = None, timeout: int = 180) -> dict:
    """Run `bench/<script> --quick *extra` offline; its stdout must be the JSON and nothing else.
    `env`: variables to set (a None value removes one)."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *extra],
        cwd=ROOT,
        env={k: v for k, v in full.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_quick_benchmark_reports_every_variant(tmp_path):
    out = tmp_path / "bench.json"
    result = run_quick("bench_model.py", "--out", str(out))
    assert json.loads(out.read_text()) == result

    env_info = result["env"]
    for key in ("torch", "threads", "cpu", "cpu_bf16", "torch_bf16_supported", "date"):
        assert key in env_info
    assert env_info["quick"] is True and env_info["batch_size"] > 0
    assert set(result["variants"]) == set(VARIANTS)

    for name, entry in result["variants"].items():
        assert "error" not in entry, f"{name}: {entry.get('error')}"
        positive_stats(entry["clips_per_s"])
        assert len(entry["per_round"]) == env_info["rounds"]
        assert entry["peak_rss_mb"] > 0 and entry["clips"] > 0

    frontend = result["variants"]["frontend"]
    assert set(frontend["formats"]) == set(FORMATS)
    for fmt in frontend["formats"].values():
        positive_stats(fmt["clips_per_s"])
    assert frontend["target"] == 100 and isinstance(frontend["meets_target"], bool)

    fast = result["variants"]["cnn14_fast"]
    assert fast["speedup_vs_fp32"]["baseline"] == "cnn14_fp32"
    assert fast["speedup_vs_fp32"]["median"] > 0
    assert 0.99 < fast["cosine_vs_fp32"]["min"] <= fast["cosine_vs_fp32"]["mean"] <= 1.0 + 1e-6
    assert isinstance(fast["meets_target"], bool)
    assert result["variants"]["cnn10_bf16"]["cosine_vs_fp32"]["min"] > 0.99

    assert result["ratios"]["cnn10_fp32/cnn14_fp32"]["median"] > 0
    rss = result["peak_rss_mb"]
    assert rss["overall"] >= max(e["peak_rss_mb"] for e in result["variants"].values()) * 0.99


@pytest.mark.slow
def test_quick_training_benchmark_reports_throughput_and_eval_time():
    result = run_quick("bench_train.py")
    for key in ("tiny_fp32", "tiny_bf16"):
        stats = result["train"][key]
        assert 0 < stats["min"] <= stats["clips_per_s"] <= stats["max"]
    assert result["train"]["tiny_bf16"]["speedup_vs_fp32"] > 0
    ev = result["evaluate"]
    assert (ev["captions"], ev["clips"]) == (500, 100) and ev["total_s"] > 0
    assert 0 <= ev["random_vectors_R@10"] <= 1
    assert result["peak_rss_mb"] > 0


@pytest.mark.slow
def test_quick_index_benchmark_reports_stages_and_reindex():
    result = run_quick("bench_index.py")
    entry = result["index"]["cnn10_slim"]
    assert entry["files"] == 4 and entry["files_per_s"] > 0
    shares = entry["stages"]["share"]
    assert set(shares) == {"decode", "frontend", "encoder", "store"}
    assert abs(sum(shares.values()) - 1) < 0.01
    assert result["reindex"]["unchanged"] == 200 and result["reindex"]["added"] == 0
    search = result["search"]
    assert search["segments"] == 2000
    for key in ("search_vector", "search_vector_folder_filter_10pct"):
        assert 0 < search[key]["p50_ms"] <= search[key]["p99_ms"]


@pytest.mark.slow
def test_quick_index_benchmark_times_the_general_model_beside_its_plain_path():
    # One thread: the MobileNet's small convolutions on two threads of a busy 2-core machine
    # spend most of their time waiting for each other.
    result = run_quick(
        "bench_index.py", "--models", "general,general_plain", "--parts", "index", "--threads", "1"
    )
    index = result["index"]
    if "skipped" in index["general"]:
        pytest.skip(f"no mn04 backbone here: {index['general']['skipped']}")
    assert set(result) == {"benchmark", "env"} | {"index"}
    for name in ("general", "general_plain"):
        entry = index[name]
        assert entry["files"] == 4 and entry["files_per_s"] > 0
        assert entry["windows_per_file"] == 1.0  # 10 s clips, 10 s windows
        assert entry["cpu_ms_per_file"] > 0 and entry["files_per_cpu_s"] > 0
        assert set(entry["stages"]["share"]) == {"decode", "frontend", "encoder", "store"}
        assert abs(sum(entry["stages"]["share"].values()) - 1) < 0.01
        tags = entry["stages"]["tags"]
        assert tags["vocabulary"] == 527 and 0 <= tags["stored_per_window"] <= 8
    assert index["general"]["fast_path"] is True and index["general_plain"]["fast_path"] is False
    ratio = index["ratios"]["general/general_plain"]
    assert ratio["median"] > 0 and len(ratio["runs"]) == result["env"]["rounds"] == 1


@pytest.mark.slow
def test_quick_catalogue_size_benchmark_compares_layouts_with_and_without_tags():
    result = run_quick("bench_catalogue_size.py")
    synthetic = result["synthetic"]
    assert synthetic["windows"] == synthetic["one_window_files"] > 0
    assert synthetic["stored_tags_per_window"] == 8
    layouts = synthetic["layouts"]
    assert set(layouts) == {"v4", "top3_names", "one_copy", "v5", "v5_top2", "v5_no_names"}
    for layout in layouts.values():
        assert layout["bytes"] > synthetic["untagged_bytes"] > 0
    assert layouts["v5"]["bytes"] < layouts["v4"]["bytes"]
    assert set(result["worst_added_share"]) == set(layouts)
    assert "skipped" in result["real"] or result["real"]["layouts"].keys() == layouts.keys()


@pytest.mark.slow
def test_index_benchmark_skips_the_general_model_without_its_backbone(tmp_path):
    env = {
        "EARSHOT_WEIGHTS_DIR": None,
        "EARSHOT_CACHE_DIR": str(tmp_path / "cache"),
        "EARSHOT_SHARED_DIR": str(tmp_path / "no-shared"),
        "EARSHOT_OFFLINE": "1",
    }
    result = run_quick("bench_index.py", "--models", "general", "--parts", "index", env=env)
    message = result["index"]["general"]["skipped"]
    assert "mn04_as_mAP_432.pt" in message and "earshot weights fetch" in message


@pytest.mark.slow
def test_quick_search_benchmark_reports_latency_recall_and_memory():
    result = run_quick("bench_search.py", "--no-text")
    assert set(result) >= {"env", "targets", "sizes", "sweep", "threshold", "filtered"}
    for size in result["sizes"].values():
        for kind in ("exact", "ivf"):
            entry = size[kind]
            assert 0 < entry["p50_ms"] <= entry["p99_ms"]
            assert entry["file_bytes_per_segment"] > 0
        assert 0 <= size["ivf"]["recall_at_10"] <= 1
        assert size["chosen"] in ("exact", "ivf")


@pytest.mark.slow
def test_quick_serve_benchmark_reports_load_latency_and_memory():
    result = run_quick("bench_serve.py")
    assert result["env"]["quick"] is True and result["catalogue"]["segments"] == 5000
    for name in ("search_8_clients", "search_1_client", "similar_8_clients"):
        phase = result["phases"][name]
        assert phase["errors"] == 0, phase["error_examples"]
        assert phase["requests"] > 0 and phase["requests_per_s"] > 0
        assert 0 < phase["p50_ms"] <= phase["p90_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    rss = result["server"]["rss_mb"]
    assert all(rss[k] > 0 for k in ("start", "middle", "end", "max"))
    assert result["in_process"]["search_text"]["p50_ms"] > 0
    assert result["target"]["met"] is False  # a quick run is never the 100k-window figure


@pytest.mark.slow
def test_quick_decode_benchmark_reports_every_format_and_memory():
    result = run_quick("bench_decode.py")
    assert set(result["speed"]) == {"wav", "flac", "ogg", "mp3", "m4a", "aac"}
    for entry in result["speed"].values():
        assert entry["audio_s_per_s"] > 0 and entry["ratio_to_wav"] > 0
        assert len(entry["seconds"]) == 2
    assert result["speed"]["wav"]["ratio_to_wav"] == 1.0
    for entry in result["memory"].values():
        assert entry["file_mb"] > 0 and entry["peak_rss_growth_mb"] >= 0


@pytest.mark.slow
def test_quick_cli_benchmark_reports_phases_beside_the_old_path():
    # Four calls of the old path (sentence-transformers' import alone is 7-15 s on a busy box).
    result = run_quick("bench_cli.py", timeout=420)
    assert result["catalogue"]["files"] == 16 and result["catalogue"]["model"] == "compact"
    for kind in ("text", "like"):
        cli = result["cli"][kind]
        for mode in ("new", "old"):
            assert 0 < cli[mode]["wall_s"]["min"] <= cli[mode]["wall_s"]["median"]
            phases = result["phases"][kind][mode]
            for key in ("import_s", "model_load_s", "encode_s", "search_s", "wall_s"):
                assert phases[key]["median"] > 0
            assert phases["hits"] == 10
        assert cli["old/new"]["median"] > 0
    assert result["phases"]["text"]["new"]["model"] == "QueryModel"
    assert result["phases"]["text"]["old"]["model"] == "JointModel"
    # What a real text search imported: none of the heavy libraries but (maybe) faiss.
    assert set(result["imports"]["text"]) <= {"faiss"}
    assert "torch" in result["imports"]["like"]
    assert "sentence_transformers" not in result["imports"]["like"]
    assert result["reference"]["torch_import_s"]["median"] > 0
    assert result["target"]["cli_text_s"] == 1.5 and isinstance(result["target"]["met"], bool)


@pytest.mark.slow
def test_quick_playback_benchmark_reports_transcode_ranges_and_export():
    result = run_quick("bench_playback.py")
    assert result["benchmark"] == "playback" and result["file"]["minutes"] == 0.5
    whole = result["transcode_whole"]
    assert whole["seconds"] > 0 and whole["wav_mb"] > 5 and whole["peak_traced_mb"] > 0
    assert set(result["range_1mib"]) == {"at_start_ms", "at_90pct_ms", "whole_over_range_at_90pct"}
    assert result["export_10s_wav"]["at_90pct_ms"] > 0


@pytest.mark.slow  # a 150 M-parameter CLAP built at random, beside two more model processes
def test_quick_clap_benchmark_reports_each_model_beside_clap(tmp_path):
    out = tmp_path / "clap.json"
    result = run_quick("bench_clap.py", "--out", str(out), timeout=600)
    assert json.loads(out.read_text()) == result
    assert result["env"]["quick"] is True and result["env"]["threads"] == 1
    clap = result["models"]["clap_htsat_unfused"]
    assert clap["parameters_m"] > 100 and clap["windows_per_clip"] == 1  # the real size
    for name, entry in result["models"].items():
        if "skipped" in entry:
            assert name == "general" and "backbone" in entry["skipped"]
            continue
        positive_stats(entry["clips_per_s"])
        assert entry["text_query_ms"] > 0 and entry["peak_rss_mb"] > 0
    assert result["models"]["compact"]["windows_per_clip"] == 4  # 4 s windows, hop 2 s
    assert result["ratios"]["compact/clap_htsat_unfused clips_per_s"]["median"] > 0


def test_quick_confidence_benchmark_fits_and_reports_precision_and_recall():
    result = run_quick("bench_confidence.py", timeout=120)
    assert result["synthetic"] is True
    text = result["models"]["synthetic"]["text"]
    assert set(text["calibration"]) >= {"a", "b", "c", "good", "weak"}
    for figures in (text["val"], text["test"]):
        assert 0 <= figures["precision_good"] <= 1 and 0 <= figures["recall_good"] <= 1
        assert figures["good"] > 0 and figures["good"] + figures["weak"] <= figures["hits"]
    assert text["test"]["precision_good"] > text["test"]["precision_none"]
    assert "threshold" in text["test_raw_cosine_threshold"]


@pytest.mark.slow
def test_quick_scale_recall_reports_ivf_and_pq_beside_exact():
    """bench_scale.py's recall part (docs/scale.md "Recall"): every index at every nprobe, and
    re-ranking PQ's top R·k by the float16 vectors never finds fewer true neighbours."""
    result = run_quick("bench_scale.py", "--parts", "recall", timeout=240)
    assert set(result) == {"machine", "model", "recall"}  # no cluster started for this part
    size = result["recall"]["sizes"]["5000"]
    assert set(size["indexes"]) == {"ivf_sqfp16", "ivf_sq8", "ivf_pq30"}
    codes = {name: entry["code_bytes_per_window"] for name, entry in size["indexes"].items()}
    assert codes == {"ivf_sqfp16": 608, "ivf_sq8": 304, "ivf_pq30": 30}  # 304-d padded; PQ 300-d
    for entry in size["indexes"].values():
        assert [run["nprobe"] for run in entry["runs"]] == [8, 32]
        assert entry["file_bytes_per_window"] > entry["code_bytes_per_window"]
        for run in entry["runs"]:
            assert 0 <= run["recall_at_10"] <= 1 and 0 < run["ms_p50"] <= run["ms_p90"]
    for run in size["indexes"]["ivf_pq30"]["runs"]:
        four, ten = run["rerank_4k"]["recall_at_10"], run["rerank_10k"]["recall_at_10"]
        assert run["recall_at_10"] - 0.01 <= four <= ten + 0.01
    training = result["recall"]["pq_training"]
    assert training["kmeans_blas"]["default_threshold"] > 0
    for part in ("polysemous", "kmeans_blas"):
        assert all(v > 0 for k, v in training[part].items() if k.endswith("_s"))


@pytest.mark.slow
def test_quick_search_stages_benchmark_times_every_variant_on_one_catalogue():
    result = run_quick("bench_search_stages.py", timeout=240)
    assert result["catalogue"]["windows"] == 5000 and result["catalogue"]["files"] == 500
    variants = result["variants"]
    assert set(variants) == {
        "full",
        "full_stats_over_sample",
        "no_confidence",
        "no_grouping",
        "no_spans",
        "bare",
    }
    for figures in variants.values():
        assert figures["n"] == 40 and 0 < figures["p50_ms"] <= figures["p90_ms"]
        assert figures["cpu_p50_ms"] > 0
    assert set(result["ratios"]) == {f"full_over_{name}" for name in variants if name != "full"}
    profile = result["profile_p50_ms"]
    assert profile["search_vector"] > 0 and profile["index.search"] > 0
    assert profile["cat.files_windows"] > 0  # spans read in full searches
    assert all(result["same_files_as_full"].values())
