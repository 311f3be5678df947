import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import gan_core

SERVICE_LIBS = ("flask", "celery", "sqlalchemy", "boto3", "botocore", "redis", "kombu")
# The [reference] extra (bench/reference.py) is installed beside gan_core; gan_core must not lean on it.
BENCH_ONLY_LIBS = ("tensorflow", "keras", "tf_keras")


def test_gan_core_imports_no_service_library_and_does_no_work():
    modules = sorted(m.name for m in pkgutil.walk_packages(gan_core.__path__, "gan_core."))
    assert {"gan_core.trainer", "gan_core.data.fetch", "gan_core.models", "gan_core.cli"} <= set(modules)
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {SERVICE_LIBS + BENCH_ONLY_LIBS!r})\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"gan_core pulled in: {out.stdout.strip()}"


def test_jobs_never_imports_the_worker_or_the_api():
    """The control plane sits below api/ and worker/ (and the CLI and client): importing every jobs
    module (the Celery app factory included) loads no module of theirs, and no jobs source names
    one. ganforge.resources (the shipped migrations and presets) is below everything and allowed."""
    from ganforge import api
    from ganforge import jobs
    from ganforge import worker

    modules = sorted(m.name for m in pkgutil.iter_modules(jobs.__path__, jobs.__name__ + "."))
    assert {"ganforge.jobs.broker", "ganforge.jobs.reconciler", "ganforge.jobs.queue", "ganforge.jobs.migrate"} <= set(modules)
    above = (worker.__name__, api.__name__, "ganforge.cli", "ganforge.client")
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(sorted(m for m in sys.modules if any(m == a or m.startswith(a + '.') for a in {above!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"jobs pulled in: {out.stdout.strip()}"
    # Lazy imports inside functions and task names in strings count too (include=["ganforge.worker.tasks"]).
    pattern = r"""\b(from|import)\s+(ganforge\.)?(worker|api|cli|client)\b|from\s+ganforge\s+import\s+(worker|api|cli|client)\b|["'](ganforge\.)?worker\."""
    for path in Path(jobs.__path__[0]).glob("*.py"):
        for line in path.read_text().splitlines():
            assert not re.search(pattern, line), f"{path.name}: {line.strip()}"
