"""bench/quality.py: seed sets, the image presets' report, and a short image run end to end."""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench import quality  # noqa: E402


def test_seed_sets():
    assert quality.parse_seed_set("0-9") == list(range(10))
    assert quality.parse_seed_set("100,103") == [100, 103]
    assert quality.parse_seed_set("7") == [7]
    assert quality.parse_seed_set("0-2,100-101") == [0, 1, 2, 100, 101]
    assert quality.seed_set("100-109") == ("100-109", list(range(100, 110)))
    for bad in ("9-0", "a", "1,1", "-3", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            quality.parse_seed_set(bad)


def _row(seed, fid, classes=10):
    return {"seed": seed, "dataset": "mnist", "device": "cpu", "steps": 100, "threads": 1, "domain_fid": fid, "classes_covered": classes,
            "mean_confidence": 0.9, "kid": 0.01, "precision": 0.8, "recall": 0.7, "coverage": 0.8,
            "train_seconds": 10.0, "ms_per_step": 100.0}


def test_image_report_judges_the_mean_against_a_fifth_of_the_classic(capsys):
    met = quality.image_report("best-mnist", "0-2", [_row(0, 15.0), _row(1, 20.0), _row(2, 22.0)], 100.0, "x")
    assert met["mean_domain_fid"] == pytest.approx(19.0) and met["ratio_to_classic"] == pytest.approx(0.19)
    assert met["target_met"] and "-> MET" in capsys.readouterr().out
    # The mean above a fifth, or one seed missing a class: not met.
    assert not quality.image_report("best-mnist", "0-2", [_row(0, 15.0), _row(1, 30.0)], 100.0, "x")["target_met"]
    assert not quality.image_report("best-mnist", "0-2", [_row(0, 5.0), _row(1, 6.0, classes=9)], 100.0, "x")["target_met"]
    assert "NOT met" in capsys.readouterr().out


def test_without_a_classic_figure_the_report_says_so(capsys):
    summary = quality.image_report("best-fashion-mnist", "0-2", [_row(0, 15.0)], None, "none recorded")
    assert summary["target_met"] is None and "ratio_to_classic" not in summary
    assert "no classic figure to compare with" in capsys.readouterr().out


def test_the_classic_is_trained_on_each_presets_dataset():
    args = argparse.Namespace(overrides=["train.lr_d=0.0003"], steps=None, samples=500, device="cpu", threads=1)
    jobs = quality.image_jobs(args, ["best-fashion-mnist", "classic-mlp-mnist", "best-mnist"], [0, 1])
    runs = [(name, doc["dataset"]["name"], doc["train"]["seed"]) for name, doc, _ in jobs]
    # The classic first, on MNIST and on Fashion-MNIST, then the presets; one job per seed.
    assert runs == [("classic-mlp-mnist", "mnist", 0), ("classic-mlp-mnist", "mnist", 1),
                    ("classic-mlp-mnist@fashion-mnist", "fashion-mnist", 0),
                    ("classic-mlp-mnist@fashion-mnist", "fashion-mnist", 1),
                    ("best-fashion-mnist", "fashion-mnist", 0), ("best-fashion-mnist", "fashion-mnist", 1),
                    ("best-mnist", "mnist", 0), ("best-mnist", "mnist", 1)]
    docs = {name: doc for name, doc, _ in jobs}
    # --set changes the presets, never the classic recipe (on either dataset).
    assert docs["best-mnist"]["train"]["lr_d"] == 0.0003
    assert docs["classic-mlp-mnist@fashion-mnist"]["train"]["lr_d"] == docs["classic-mlp-mnist"]["train"]["lr_d"] != 0.0003
    assert all(doc["device"] == "cpu" for doc in docs.values())


def run_bench(args, data_dir, cache_dir):
    env = {**os.environ, "GANFORGE_DATA_DIR": str(data_dir), "GANFORGE_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, "bench/quality.py", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_short_image_run_prints_the_figures_per_seed_set(data_dir, cache_dir):
    done = run_bench(["--images", "--preset", "best-mnist", "--steps", "8", "--samples", "300",
                      "--seeds", "0", "5", "--workers", "1"], data_dir, cache_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # One table per seed set, each titled with its set, a row per seed, then the verdict.
    assert "steps, seeds 0," in out and "steps, seeds 5," in out
    rows = re.findall(r"^\s+(\d+)\s+([0-9.]+)\s+(\d+)\s+", out, re.MULTILINE)
    assert [int(seed) for seed, _, _ in rows] == [0, 5]
    assert all(float(fid) > 0 and 0 <= int(classes) <= 10 for _, fid, classes in rows)
    assert out.count("ratio to the classic preset's 98.01") == 2


def test_a_bad_override_names_the_field(data_dir, cache_dir):
    done = run_bench(["--images", "--set", "train.lr_d=-1"], data_dir, cache_dir)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "train.lr_d" in done.stderr


def test_device_cuda_without_a_gpu_is_a_message(data_dir, cache_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU for the bench, also on a machine that has one
    done = run_bench(["--images", "--device", "cuda", "--steps", "2"], data_dir, cache_dir)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "a CUDA device" in done.stderr and "--device cuda" in done.stderr


def test_set_overrides_a_mixture_preset_and_a_bad_one_names_the_field(data_dir, cache_dir):
    doc = quality.mixture_spec_doc("ring8", 7, None, "cpu", {"model": {"pack": 2}})
    assert doc["model"]["pack"] == 2 and doc["train"]["seed"] == 7
    assert doc["model"]["hidden_g"] == [128, 128, 128]  # the rest of the preset kept
    done = run_bench(["--datasets", "ring8", "--seeds", "0", "--set", "model.pack=3"], data_dir, cache_dir)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "ring8-quality.json" in done.stderr and "train.batch_size" in done.stderr
