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


# ---- presets by name -----------------------------------------------------------------------------
def test_presets_lists_each_preset_on_one_line_with_its_description(capsys):
    from ganforge.cli.presets import preset_paths

    names = sorted(preset_paths())
    assert {"ring8", "classic-mlp-mnist", "dcgan-mnist"} <= set(names)
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == names
    assert all(len(line.split(None, 1)) == 2 for line in lines), lines  # every preset says what it is
    assert main(["presets", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert [item["name"] for item in items] == names and all(item["description"] for item in items)


def test_a_preset_name_works_where_a_spec_file_does(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the name, not a relative path, finds the preset
    assert main(["validate", "ring8"]) == 0
    assert "valid spec 'ring'" in capsys.readouterr().out
    assert main(["train", "ring8", "--out", str(tmp_path / "run"), "--steps", "4", "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "spec.json").read_text())["train"]["steps"] == 4
    assert main(["train", "ring9", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "no such spec file and no preset of that name; did you mean `ring8`" in err


# ---- help everywhere -----------------------------------------------------------------------------
def _commands(parser, path=("ganforge",)):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, path + (name,))


def test_every_command_has_examples_and_every_option_has_help():
    import argparse

    from ganforge.cli import build_parser

    commands = list(_commands(build_parser()))
    assert len(commands) > 25
    missing_example = [" ".join(path) for path, p in commands if "examples:\n  ganforge" not in (p.epilog or "")]
    assert missing_example == []
    missing_help = [f"{' '.join(path)} {action.option_strings or action.dest}" for path, p in commands
                    for action in p._actions
                    if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help]
    assert missing_help == []


# ---- clear messages ------------------------------------------------------------------------------
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def test_generate_names_a_missing_checkpoint_file_and_checks_out_first(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "runs" / "generator.pt"), "--out", str(tmp_path / "x.png"),
                 "--url", NOWHERE]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint file" in err and "not found" not in err and "cannot reach" not in err

    job_id = "0" * 32  # a job id: these go to the service, but only once --out is known to be writable
    assert main(["generate", job_id, "--out", str(tmp_path / "missing" / "x.png"), "--url", NOWHERE]) == 2
    err = capsys.readouterr().err
    assert f"the folder {tmp_path / 'missing'} does not exist" in err and "cannot reach" not in err
    assert main(["generate", job_id, "--out", str(tmp_path / "x.gif"), "--url", NOWHERE]) == 2
    assert ".jpg" in capsys.readouterr().err


def test_generate_writes_jpeg_for_a_jpg_out(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(_spec(tmp_path)), "--out", str(out), "--quiet"]) == 0
    for name in ("grid.jpg", "grid.JPEG"):
        assert main(["generate", str(out / "final" / "generator.pt"), "--n", "16", "--out", str(tmp_path / name)]) == 0
        assert (tmp_path / name).read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG's magic, not a PNG renamed
    assert main(["generate", str(out / "final" / "generator.pt"), "--n", "16", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("url, says", [
    ("localhost:8080", "give the scheme and host, e.g. http://localhost:8080"),
    ("127.0.0.1:8080", "give the scheme and host"),
    ("http://127.0.0.1:8080/v1", "without /v1 (the commands add it), e.g. http://127.0.0.1:8080"),
    ("http://127.0.0.1:8080/v1/jobs", "without /v1"),
])
def test_a_url_without_scheme_or_with_v1_is_refused_before_any_request(url, says, capsys):
    assert main(["list", "--url", url]) == 2
    assert says in capsys.readouterr().err


def test_a_server_that_is_down_is_named_with_a_way_forward(capsys, monkeypatch):
    assert main(["status", "0" * 32, "--url", NOWHERE]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the ganforge service at {NOWHERE}" in err and "ganforge up" in err
    assert "Traceback" not in err
    monkeypatch.setenv("GANFORGE_URL", "example.org:8080")
    assert main(["list"]) == 2
    assert "$GANFORGE_URL 'example.org:8080'" in capsys.readouterr().err


def test_keys_name_the_data_folder_they_looked_in(tmp_path, capsys, monkeypatch):
    from ganforge.jobs.migrate import upgrade

    for name in ("GANFORGE_MODE", "GANFORGE_DATABASE_URL", "GANFORGE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # the default ~/.ganforge: empty
    assert main(["keys", "list"]) == 2
    err = capsys.readouterr().err
    assert f"no ganforge database at {tmp_path / 'user' / '.ganforge' / 'ganforge.db'}" in err
    assert "--data-dir" in err and "GANFORGE_HOME" in err
    assert not (tmp_path / "user" / ".ganforge").exists()  # nothing created by looking

    home = tmp_path / "up-home"  # where `ganforge up --data-dir` keeps its data
    home.mkdir()
    upgrade(f"sqlite:///{home / 'ganforge.db'}")
    assert main(["keys", "create", "--tenant", "acme", "--data-dir", str(home)]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--data-dir", str(home)]) == 0
    assert "acme" in capsys.readouterr().out


def test_an_unknown_spec_field_suggests_the_known_one(tmp_path, capsys):
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({**TINY, "train": {"step": 10, "batch_size": 8}, "sampel_every": 2}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.step: unknown field; did you mean 'steps'?" in err
    assert "sampel_every: unknown field; did you mean 'sample_every'?" in err


# ---- the progress bar ----------------------------------------------------------------------------
def _job(status: str, step: int, total: int = 100) -> dict:
    return {"status": status, "progress": {"step": step, "total": total}, "latest_metrics": None}


def test_the_bar_starts_with_the_job_and_stops_before_the_final_evaluation(capsys):
    import time

    from ganforge.cli.follow import Progress

    progress = Progress(_job("queued", 0), show=True)
    progress.update(_job("queued", 0))
    assert progress.started_at is None  # time in the queue is not training time
    progress.update(_job("running", 7))
    assert progress.bar.n == 7  # the first step the service reports shows at once
    progress.update(_job("running", 100))
    assert progress.closed and progress.train_seconds is not None
    trained = progress.train_seconds
    time.sleep(0.5)  # the final evaluation: the bar's clock has stopped
    progress.update(_job("running", 100))
    progress.update(_job("succeeded", 100))
    progress.close()
    assert progress.train_seconds == trained < 0.5
    assert "training done; final evaluation and uploads" in capsys.readouterr().err


def test_the_summary_is_a_short_table_without_urls():
    from ganforge.cli.follow import format_table, summary_rows

    job = {"id": "a" * 32, "name": "ring", "status": "succeeded", "progress": {"step": 300, "total": 300},
           "runtime_seconds": 12.5, "attempts": 1, "latest_metrics": {"steps_per_s": 41.2},
           "evaluation": {"modes": 8, "hq_fraction": 0.91234, "per_mode": [1, 2]}}
    samples = [{"step": 100, "url": "http://x/sig=SECRET"}, {"step": 300, "url": "http://x/sig=SECRET"}]
    table = format_table(summary_rows(job, samples, {"url": "http://x/final?sig=SECRET"}))
    assert "300 / 300, 41.2 steps/s while training (12.5 s on the worker" in table
    assert "modes 8, hq_fraction 0.9123" in table and "per_mode" not in table
    assert "SECRET" not in table and "http" not in table and "{" not in table
    assert len(table.splitlines()) <= 8
