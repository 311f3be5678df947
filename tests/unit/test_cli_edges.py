"""The local CLI's sharp edges, driven through the real `ganforge` entry point: a used --out,
presets by name, unknown spec fields, output paths and formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ganforge.cli import main

TINY = {"name": "tiny", "dataset": {"name": "ring8"}, "model": {"latent_dim": 2, "hidden_g": [16], "hidden_d": [16]},
        "train": {"steps": 4, "batch_size": 8}, "log_every": 2, "sample_every": 2, "checkpoint_every": 2,
        "eval": {"at_end": False}}


def _spec(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**TINY, **changes}))
    return path


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_refuses_a_used_out_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(_spec(tmp_path)), "--out", str(out), "--quiet"]) == 0
    assert _steps(out) == [2, 4]
    capsys.readouterr()

    # A second run into the same folder would mix two runs' metrics, grids and checkpoints.
    spec = _spec(tmp_path, train={"steps": 6, "batch_size": 8}, checkpoint_every=3, sample_every=3)
    assert main(["train", str(spec), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is not empty" in err and "--resume" in err and "--overwrite" in err
    assert _steps(out) == [2, 4]  # untouched

    assert main(["train", str(spec), "--out", str(out), "--quiet", "--resume", "--overwrite"]) == 2
    assert "pick one" in capsys.readouterr().err

    (out / "my-notes.txt").write_text("mine")
    assert main(["train", str(spec), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert _steps(out) == [2, 4, 6]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000003.pt", "step-000006.pt"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000003.png", "step-000006.png"]
    assert (out / "my-notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_train_into_an_empty_or_missing_folder_needs_no_flag(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["train", str(_spec(tmp_path)), "--out", str(tmp_path / "empty"), "--quiet"]) == 0
    assert main(["train", str(_spec(tmp_path)), "--out", str(tmp_path / "new" / "run"), "--quiet"]) == 0
    assert _steps(tmp_path / "new" / "run") == [2, 4]
