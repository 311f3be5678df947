"""bench/reference.py on a short run: the seed article's Keras GAN (tensorflow-cpu, the [reference]
extra that scripts/setup installs) and ganforge's preset, both scored by ganforge's evaluator."""

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "reference.py"
ROW = re.compile(r"^\| (keras|ganforge) \| (\d+) \| ([0-9.]+|nan) \| (\d+)/10 \| ([0-9.]+|nan) \|", re.MULTILINE)


def run_bench(args, data_dir, cache_dir, timeout=600):
    env = {**os.environ, "GANFORGE_DATA_DIR": str(data_dir), "GANFORGE_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def rows(stdout):
    return {(m[1], int(m[2])): (float(m[3]), int(m[4]), float(m[5])) for m in ROW.finditer(stdout)}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "dcgan"])
def test_short_reference_run_trains_and_scores_both_sides(model, tmp_path, data_dir, cache_dir):
    out = tmp_path / "runs"
    done = run_bench(["--model", model, "--steps", "30", "--seeds", "0", "--samples", "400", "--out", str(out)],
                     data_dir, cache_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = rows(done.stdout)
    assert set(figures) == {("keras", 0), ("ganforge", 0)}, done.stdout
    for fid, classes, confidence in figures.values():
        assert math.isfinite(fid) and fid > 0
        assert 1 <= classes <= 10
        assert 0.1 <= confidence <= 1.0
    assert "ganforge / keras mean domain FID" in done.stdout
    samples = np.load(out / f"keras-{model}-0.npy")
    assert samples.shape == (400, 1, 28, 28) and samples.dtype == np.float32
    assert samples.min() >= -1.0 and samples.max() <= 1.0 and samples.std() > 0.01  # tanh images, not a constant

    # --reuse scores the same runs again without training: the same figures.
    again = run_bench(["--model", model, "--steps", "30", "--seeds", "0", "--samples", "400", "--out", str(out),
                       "--reuse"], data_dir, cache_dir)
    assert again.returncode == 0, again.stderr
    assert rows(again.stdout) == figures


def test_bad_override_is_a_message_naming_the_field(tmp_path, data_dir, cache_dir):
    done = run_bench(["--sides", "ganforge", "--set", "train.d_update=sideways", "--out", str(tmp_path)],
                     data_dir, cache_dir)
    assert done.returncode == 2
    assert "train.d_update" in done.stderr and "Traceback" not in done.stderr


def test_missing_tensorflow_says_how_to_install(monkeypatch, capsys, data_dir):
    spec = importlib.util.spec_from_file_location("reference_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "reference_bench", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a))
    monkeypatch.setenv("GANFORGE_DATA_DIR", str(data_dir))
    with pytest.raises(SystemExit) as exc:
        bench.check_prerequisites(["keras", "ganforge"])
    assert exc.value.code == 2
    assert "pip install -e '.[reference]'" in capsys.readouterr().err
    bench.check_prerequisites(["ganforge"])  # the ganforge side alone does not need tensorflow
