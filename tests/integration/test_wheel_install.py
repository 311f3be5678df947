"""ganforge installs like any Python package: the wheel `pip wheel .` builds, installed into a fresh
venv, runs `ganforge up` and trains a job from a folder outside the checkout, with the migrations
and presets it ships (read through ganforge.resources, never from the checkout).

The venv gets no internet: the wheel goes in with --no-deps, and a .pth file lends it the
dependencies already installed in the running environment (not its .pth files: the editable
install of the checkout stays out of sight). Nothing of the checkout is on its sys.path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

import ganforge

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TINY = {"name": "wheel-tiny", "dataset": {"name": "ring8"},
        "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32, 32]},
        "train": {"steps": 60, "batch_size": 32}, "log_every": 20, "sample_every": 30,
        "checkpoint_every": 30, "device": "cpu", "eval": {"n_samples": 200}}


def _package_folder(name: str, package_dir: dict[str, str]) -> Path:
    """Where setuptools takes package ``name`` from: the longest package-dir prefix, else the root."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in package_dir:
            return ROOT / package_dir[prefix] / Path(*parts[i:])
    return ROOT / Path(*parts)


def test_every_source_package_is_listed_for_the_wheel():
    """pyproject lists its packages (package-dir maps some folders): a new subpackage left out of
    the list would be missing from every install but work from the checkout."""
    tool = PYPROJECT["tool"]["setuptools"]
    listed, package_dir = set(tool["packages"]), tool.get("package-dir", {})
    missing = []
    for name in sorted(listed):
        folder = _package_folder(name, package_dir)
        assert folder.is_dir(), f"{name}: {folder} does not exist"
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            if any(p.is_symlink() for p in [folder / Path(*rel.parts[:i + 1]) for i in range(len(rel.parts))]):
                continue  # a link into another listed folder (ganforge/migrations -> ../migrations)
            sub = ".".join([name, *rel.parts])
            if sub not in listed:
                missing.append(sub)
    assert missing == [], f"add to [tool.setuptools] packages: {missing}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the built wheel (plus the running environment's dependencies)."""
    work = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # From a copy: setuptools reuses the source tree's build/ folder, whose leftovers (a module since
    # moved or renamed) would end up in the wheel.
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs", ".cache", "tests", "bench"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(work / "dist")], env=env, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel, = (work / "dist").glob("ganforge-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    # pip --python: this pip installs into the new venv, which sees nothing but itself yet.
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", "-q", str(wheel)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True, env=env).strip())
    # A path line, not `import site; site.addsitedir(...)`: the lender's own .pth files (the editable
    # install of the checkout) must not run.
    (site / "_lent_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("GANFORGE_", "AWS_"))}
    return {**env, "OMP_NUM_THREADS": "1", "GANFORGE_HOME": str(home)}


def test_the_wheel_holds_every_module_and_the_data_it_reads(installed, tmp_path):
    env = _clean_env(tmp_path / "home")
    code = (
        "import importlib, importlib.metadata as md, json, pathlib, ganforge\n"
        "from ganforge import resources\n"
        "files = [f for f in md.files('ganforge') if f.suffix == '.py' and f.parts[0] != '..']\n"
        "mods = sorted('.'.join(f.with_suffix('').parts) for f in files)\n"
        "mods = [m.removesuffix('.__init__') for m in mods if not m.endswith('__main__')\n"
        "        and not m.startswith('ganforge.migrations')]\n"
        "for m in mods: importlib.import_module(m)\n"
        "print(json.dumps({'file': ganforge.__file__, 'modules': len(mods), 'version': ganforge.__version__,\n"
        "                  'metadata_version': md.version('ganforge'),\n"
        "                  'top': sorted({f.parts[0] for f in md.files('ganforge') if f.parts[0] != '..'\n"
        "                                 and not f.parts[0].endswith('.dist-info')}),\n"
        "                  'migrations': str(resources.migrations_dir()), 'presets': resources.preset_names(),\n"
        "                  'sweep_presets': sorted(p.name for p in resources.presets_dir().joinpath('sweeps').iterdir())}))\n"
    )
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    site = str(installed)
    assert found["file"].startswith(site) and found["migrations"].startswith(site)  # not the checkout's
    assert found["modules"] > 50
    # What it claims in site-packages: exactly the top-level names of pyproject's packages (with
    # scripts/namespace_rewrite.py applied, only ganforge and gan_core: no generic `api` or `jobs`).
    assert found["top"] == sorted({name.split(".")[0] for name in PYPROJECT["tool"]["setuptools"]["packages"]})
    assert found["version"] == ganforge.__version__ == found["metadata_version"]  # one source
    assert sorted(found["presets"]) == sorted(p.stem for p in (ROOT / "presets").glob("*.json"))
    assert found["sweep_presets"] == sorted(p.name for p in (ROOT / "presets" / "sweeps").glob("*.json"))
    version = subprocess.run([str(installed / "bin" / "ganforge"), "--version"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"ganforge {found['version']}", version.stderr


def test_ganforge_up_from_the_wheel_trains_a_job_outside_the_checkout(installed, tmp_path):
    env = _clean_env(tmp_path / "home")
    env["GANFORGE_DATA_DIR"] = str(tmp_path / "datasets")  # ring8 is synthetic: nothing to download
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    ganforge = str(installed / "bin" / "ganforge")
    port = _free_port()
    log = tmp_path / "up.log"
    up = subprocess.Popen([ganforge, "up", "--port", str(port)], cwd=tmp_path, env=env,
                          stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert up.poll() is None, f"ganforge up exited {up.returncode}:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/presets", timeout=10) as response:
                    presets = json.load(response)["items"]
                break
            except OSError:  # not listening yet
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        # The presets it ships, every one of them (a wheel without presets/ lists none).
        assert sorted(p["name"] for p in presets) == sorted(p.stem for p in (ROOT / "presets").glob("*.json"))
        # The dashboard's templates and static files (package data of the API) came along too.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200 and "dashboard.js" in response.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/dashboard.js", timeout=10) as response:
            assert response.status == 200
        run = subprocess.run([ganforge, "submit", "tiny.json", "--wait", "--url", f"http://127.0.0.1:{port}"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr + log.read_text()
        assert "succeeded" in run.stdout, run.stdout
        assert (tmp_path / "home" / "ganforge.db").is_file()  # migrated by the wheel's own scripts
    finally:
        up.terminate()
        up.wait(60)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
