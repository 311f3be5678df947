"""`pip install ganforge` (no extra) gives the local library and CLI; the service commands need
`ganforge[service]` and say so. The missing extra is simulated: the service's modules are made
unimportable (None in sys.modules) in a fresh interpreter before the CLI runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ganforge.cli.serve import SERVICE_HINT, SERVICE_MODULES

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run_without_service(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        f"for name in {sorted(SERVICE_MODULES)!r}: sys.modules[name] = None  # `import name` now fails\n"
        "from ganforge.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "GANFORGE_HOME": str(cwd / "home"), "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("argv", [["up", "--port", "0"], ["api"], ["worker"], ["db", "upgrade"], ["keys", "list"],
                                  ["reconcile", "--once"]])
def test_a_service_command_without_the_service_extra_names_it(argv, tmp_path):
    out = run_without_service(argv, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert f"`ganforge {argv[0]}` needs the service" in out.stderr and SERVICE_HINT in out.stderr, out.stderr


def test_the_local_commands_need_no_service_library(tmp_path):
    """What the base install promises: validate and train (and --version) with every service module gone."""
    spec = {"name": "base", "dataset": {"name": "ring8"}, "model": {"latent_dim": 2, "hidden_g": [16], "hidden_d": [16]},
            "train": {"steps": 20, "batch_size": 16}, "log_every": 10, "sample_every": 20, "checkpoint_every": 20,
            "device": "cpu", "eval": {"n_samples": 100}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    version = run_without_service(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("ganforge "), version.stderr
    validate = run_without_service(["validate", "spec.json"], tmp_path)
    assert validate.returncode == 0, validate.stderr
    train = run_without_service(["train", "spec.json", "--out", "run", "--data-dir", str(tmp_path / "data")], tmp_path)
    assert train.returncode == 0, train.stderr
    assert any((tmp_path / "run").rglob("*.pt")), sorted(p.name for p in (tmp_path / "run").rglob("*"))


def test_every_service_requirement_is_known_to_the_cli():
    """A library added to [service] must be one the CLI recognises as missing (else a traceback)."""
    names = {re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("-", "_")
             for req in PYPROJECT["project"]["optional-dependencies"]["service"]}
    assert names <= SERVICE_MODULES, f"add to ganforge.cli.serve.SERVICE_MODULES: {sorted(names - SERVICE_MODULES)}"


def test_the_base_install_pulls_no_service_library():
    base = " ".join(PYPROJECT["project"]["dependencies"]).lower().replace("-", "_")
    assert not [name for name in SERVICE_MODULES if re.search(rf"\b{name}\b", base)]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "ganforge[service]" in extras["test"] and "ganforge[service]" in extras["bench"]
    assert "reference" in extras


def test_constraints_pin_every_requirement_within_its_range():
    """constraints.txt (scripts/constraints.py) pins each requirement of every extra at a version its
    range allows, torch at the release scripts/setup installs; a new or raised requirement without a
    regenerated file fails here, not in a user's resolver."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = (ROOT / "constraints.txt").read_text()
    assert "scripts/constraints.py > constraints.txt" in text.split("\n\n")[0]  # how to regenerate, on top
    pins = dict(line.split("==") for line in text.splitlines() if line and not line.startswith("#"))
    pins = {canonicalize_name(name): version for name, version in pins.items()}
    project = PYPROJECT["project"]
    wrong = []
    for req in [*project["dependencies"], *(r for reqs in project["optional-dependencies"].values() for r in reqs)]:
        req = Requirement(req)
        name = canonicalize_name(req.name)
        if name == "ganforge":
            continue
        if name not in pins or not req.specifier.contains(pins[name], prereleases=True):
            wrong.append(f"{req} (pinned {pins.get(name)})")
    assert wrong == [], f"regenerate: .venv/bin/python scripts/constraints.py > constraints.txt; {wrong}"
    setup = (ROOT / "scripts" / "setup").read_text()
    assert f'"torch=={pins["torch"]}"' in setup and "-c constraints.txt" in setup
