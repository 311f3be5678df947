"""scripts/namespace_rewrite.py on a small tree: every form of reference to api/, jobs/ and worker/
gets the ganforge prefix, code that only looks alike stays, and a second run changes nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "namespace_rewrite.py"

SOURCE = textwrap.dedent('''\
    """Uses jobs.lifecycle and ``api:create_app()``; see api/jobs.py and the worker.log file."""
    import jobs
    import api as service_api
    from jobs.lifecycle import submit
    from worker import tasks
    from ganforge.cli import main


    def f(monkeypatch, jobs_by_id, url_for):
        monkeypatch.setattr("jobs.lifecycle.time", None)  # patched where it is used
        include = ["worker.tasks"]
        argv = ["gunicorn", "api:create_app()", "-m", "worker.tasks"]
        hooks = ["-c", "python:api.gunicorn_hooks"]  # gunicorn's config module
        url = "http://api.gunicorn_hooks/x"  # a host name, not a module
        endpoint = url_for("jobs.keys")  # a Flask endpoint named after its blueprint: not a module
        jobs = {"a": 1}
        names = jobs.keys()  # a variable called jobs, not the package
        table = "jobs.id"  # not a module of jobs/
        log = "api.access"  # a logger name of its own
        code = "from jobs.keys import x\\nimport worker\\n"
        return include, argv, hooks, url, endpoint, names, table, log, code
    ''')

EXPECTED = textwrap.dedent('''\
    """Uses ganforge.jobs.lifecycle and ``ganforge.api:create_app()``; see api/jobs.py and the worker.log file."""
    from ganforge import jobs
    from ganforge import api as service_api
    from ganforge.jobs.lifecycle import submit
    from ganforge.worker import tasks
    from ganforge.cli import main


    def f(monkeypatch, jobs_by_id, url_for):
        monkeypatch.setattr("ganforge.jobs.lifecycle.time", None)  # patched where it is used
        include = ["ganforge.worker.tasks"]
        argv = ["gunicorn", "ganforge.api:create_app()", "-m", "ganforge.worker.tasks"]
        hooks = ["-c", "python:ganforge.api.gunicorn_hooks"]  # gunicorn's config module
        url = "http://api.gunicorn_hooks/x"  # a host name, not a module
        endpoint = url_for("jobs.keys")  # a Flask endpoint named after its blueprint: not a module
        jobs = {"a": 1}
        names = jobs.keys()  # a variable called jobs, not the package
        table = "jobs.id"  # not a module of jobs/
        log = "api.access"  # a logger name of its own
        code = "from ganforge.jobs.keys import x\\nfrom ganforge import worker\\n"
        return include, argv, hooks, url, endpoint, names, table, log, code
    ''')

PYPROJECT = textwrap.dedent('''\
    [tool.setuptools]
    packages = [
        "gan_core", "ganforge",
        "api", "jobs", "jobs.sub", "worker",
    ]

    [tool.setuptools.package-dir]
    "ganforge.presets" = "presets"

    [tool.setuptools.package-data]
    api = ["templates/*.html"]
    ''')


def make_tree(root: Path) -> None:
    for folder, modules in {"api": ["jobs", "gunicorn_hooks"], "jobs": ["lifecycle", "keys"], "worker": ["tasks"], "ganforge": []}.items():
        (root / folder).mkdir()
        (root / folder / "__init__.py").write_text('"""The package."""\n\nfrom __future__ import annotations\n')
        for module in modules:
            (root / folder / f"{module}.py").write_text("")
    (root / "jobs" / "sub").mkdir()
    (root / "jobs" / "sub" / "__init__.py").write_text("")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text(SOURCE)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "README.md").write_text("The lifecycle (`jobs.lifecycle.submit`) lives in jobs/lifecycle.py.\n")
    (root / "scripts").mkdir()
    (root / "scripts" / "serve").write_text('#!/bin/sh\npython -c "from api.openapi import x" && celery -A worker.tasks\n')


def run(root: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *flags, str(root)], capture_output=True, text=True, timeout=60)


def test_the_rewrite_on_a_tree_and_its_idempotence(tmp_path):
    make_tree(tmp_path)
    assert run(tmp_path, "--check").returncode == 1  # something to do
    first = run(tmp_path)
    assert first.returncode == 0 and first.stderr == "", first.stderr
    assert (tmp_path / "tests" / "test_x.py").read_text() == EXPECTED
    assert (tmp_path / "README.md").read_text() == \
        "The lifecycle (`ganforge.jobs.lifecycle.submit`) lives in jobs/lifecycle.py.\n"
    assert (tmp_path / "scripts" / "serve").read_text() == \
        '#!/bin/sh\npython -c "from ganforge.api.openapi import x" && celery -A ganforge.worker.tasks\n'
    pyproject = (tmp_path / "pyproject.toml").read_text()
    assert '"ganforge.api", "ganforge.jobs", "ganforge.jobs.sub", "ganforge.worker",' in pyproject
    for package in ("api", "jobs", "worker"):
        assert f'"ganforge.{package}" = "{package}"' in pyproject
        link = tmp_path / "ganforge" / package
        assert link.is_symlink() and link.resolve() == (tmp_path / package).resolve()
        init = (tmp_path / package / "__init__.py").read_text()
        assert init.index("from __future__") < init.index(f'if __name__ != "ganforge.{package}"')
    assert '"ganforge.api" = ["templates/*.html"]' in pyproject and "\napi = [" not in pyproject
    # Idempotent: nothing left to do, and a second run changes no byte.
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert run(tmp_path, "--check").returncode == 0
    assert run(tmp_path).returncode == 0
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_the_guard_refuses_a_bare_import(tmp_path):
    make_tree(tmp_path)
    run(tmp_path)
    bare = subprocess.run([sys.executable, "-c", "import jobs"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 1 and "import ganforge.jobs, not jobs" in bare.stderr
    named = subprocess.run([sys.executable, "-c", "import ganforge.jobs.lifecycle"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert named.returncode == 0, named.stderr
