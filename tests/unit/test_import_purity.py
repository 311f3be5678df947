import pkgutil
import subprocess
import sys

import gan_core

SERVICE_LIBS = ("flask", "celery", "sqlalchemy", "boto3", "botocore", "redis", "kombu")
# The [reference] extra (bench/reference.py) is installed beside gan_core; gan_core must not lean on it.
BENCH_ONLY_LIBS = ("tensorflow", "keras", "tf_keras")


def test_gan_core_imports_no_service_library_and_does_no_work():
    modules = sorted(m.name for m in pkgutil.iter_modules(gan_core.__path__, "gan_core."))
    assert {"gan_core.trainer", "gan_core.data", "gan_core.models", "gan_core.cli"} <= set(modules)
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {SERVICE_LIBS + BENCH_ONLY_LIBS!r})\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"gan_core pulled in: {out.stdout.strip()}"
