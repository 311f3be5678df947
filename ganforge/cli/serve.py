"""The service's commands: up (everything on this machine), api, worker, reconcile, keys, db.

Each command imports the service modules it uses when it runs (deliberately lazy): the client
and local commands share this parser, and ``ganforge status`` or ``ganforge train`` should not
load SQLAlchemy, Celery, Flask and alembic first.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from gan_core.cli import CLIError, add_command
from ganforge.cli.follow import submit_and_wait
from ganforge.client import Client


# The top-level modules `pip install 'ganforge[service]'` brings (and the ones they bring that these
# commands import directly): a service command that finds one missing names the extra to install.
# tests/unit/test_cli_extras.py checks that every [service] requirement is here.
SERVICE_MODULES = frozenset({
    "pydantic_settings", "celery", "kombu", "redis", "sqlalchemy", "alembic", "flask", "werkzeug", "jinja2",
    "boto3", "botocore", "psycopg", "gunicorn", "orjson", "optuna", "tenacity", "cachetools", "flask_swagger_ui",
    "prometheus_client",
})
SERVICE_HINT = "pip install 'ganforge[service]'"


def needs_service(command):
    """Run a service command; a missing service library is a one-line message naming the extra."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in SERVICE_MODULES:
                raise
            raise CLIError(f"`ganforge {args.command}` needs the service, which is not installed here "
                           f"(no module named {exc.name!r}): {SERVICE_HINT}", 2) from None

    return run


def _settings():
    from ganforge.jobs.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise CLIError(str(exc), 2) from None


def _use_data_dir(args: argparse.Namespace) -> None:
    """--data-dir: the embedded data folder, as GANFORGE_HOME says (and as `up --data-dir` took it)."""
    if getattr(args, "data_dir", None):
        os.environ["GANFORGE_HOME"] = str(Path(args.data_dir).expanduser().resolve())


def _existing_embedded_database(settings) -> None:
    """Operator commands read an existing database: a missing SQLite file is a wrong data folder,
    not an empty database to create."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise CLIError(f"no ganforge database at {url.database}: embedded data lives in {settings.data_dir} "
                       "($GANFORGE_HOME, default ~/.ganforge). Pass the folder `ganforge up --data-dir` was given "
                       "with --data-dir (or set GANFORGE_HOME), or start `ganforge up` there once to create it", 2)


def cmd_db(args: argparse.Namespace) -> int:
    from ganforge.jobs.migrate import downgrade, upgrade

    _use_data_dir(args)
    settings = _settings()
    if settings.is_embedded:
        settings.ensure_data_dir()
    if args.action == "upgrade":
        upgrade(settings.database_url, args.revision or "head")
    else:
        downgrade(settings.database_url, args.revision or "-1")
    print(f"database {args.action}d to {args.revision or ('head' if args.action == 'upgrade' else '-1')}")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from ganforge.jobs.logs import configure_logging
    from ganforge.jobs.services import Services
    from ganforge.jobs.reconciler import reconcile_once

    settings = _settings()
    configure_logging(settings.log_json)
    services = Services.from_settings(settings)
    while True:
        counts = reconcile_once(services)
        print(json.dumps(counts) if args.json else
              ", ".join(f"{name.replace('_', ' ')}: {n}" for name, n in counts.items()), flush=True)
        if args.once:
            return 0
        time.sleep(settings.reconcile_seconds)


def cmd_keys(args: argparse.Namespace) -> int:
    """Operator commands on the database (like ``db upgrade``): no API, no key needed."""
    from ganforge.jobs.db import Database
    from ganforge.jobs.keys import KeyAdminError, create_key, list_keys, revoke_key

    from sqlalchemy.exc import OperationalError, ProgrammingError

    _use_data_dir(args)
    settings = _settings()
    _existing_embedded_database(settings)
    db = Database(settings.database_url)
    try:
        if args.action == "create":
            row, key = create_key(db, args.tenant, args.admin)
            print(f"created key {row.id} for tenant {row.tenant}{' (admin)' if row.is_admin else ''}; "
                  "it is shown only now:", file=sys.stderr)
            print(key)  # alone on the last line of stdout, for scripts
        elif args.action == "list":
            rows = list_keys(db)
            for row in rows:
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                print(f"{row.id}  {row.prefix}…  {row.tenant:20s} {'admin ' if row.is_admin else ''}{state}")
            if not rows:
                print("no API keys")
        else:
            row = revoke_key(db, args.id)
            print(f"revoked key {row.id} ({row.prefix}…, tenant {row.tenant}); API processes forget it within "
                  f"{settings.auth_cache_seconds:g} s")
    except KeyAdminError as exc:
        raise CLIError(str(exc), 2) from None
    except (OperationalError, ProgrammingError) as exc:
        raise CLIError(f"cannot use the api_keys table ({type(exc).__name__}); run `ganforge db upgrade` first") from None
    finally:
        db.dispose()
    return 0


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _check_embedded_host(settings, host: str) -> None:
    # Embedded mode has no multi-user story (SQLite, keys optional): it never listens beyond this machine.
    if settings.is_embedded and host not in LOOPBACK:
        raise CLIError(f"embedded mode binds 127.0.0.1 only, not {host}; run GANFORGE_MODE=production "
                       "(PostgreSQL, Redis, S3, API keys) to serve other machines", 2)


def _worker_devices(requested: int | None) -> tuple[int, bool]:
    """(devices, gpus): --devices, else every visible GPU, else 1 (a CPU worker)."""
    import torch  # the heaviest of all: only `worker` and `up` count GPUs

    gpus = torch.cuda.is_available()
    if requested is not None:
        if requested < 1:
            raise CLIError("--devices must be at least 1", 2)
        if gpus and requested > torch.cuda.device_count():
            raise CLIError(f"--devices {requested}: only {torch.cuda.device_count()} GPU(s) are visible", 2)
        return requested, gpus
    return (torch.cuda.device_count() if gpus else 1), gpus


def _worker_queues(args: argparse.Namespace) -> tuple[int, str]:
    from ganforge.jobs.lifecycle import queues_served

    devices, gpus = _worker_devices(args.devices)
    return devices, args.queues or ",".join(queues_served(devices, gpus))


def cmd_worker(args: argparse.Namespace) -> int:
    from ganforge.jobs.logs import configure_logging
    from ganforge.jobs.broker import make_celery

    if os.environ.get("GANFORGE_UP_PID") == str(os.getppid()):
        from gan_core.launch import die_with_parent

        die_with_parent(signal.SIGTERM)  # started by `ganforge up`: drain when it dies, however it dies
    if args.metrics_port is not None:
        prometheus_multiprocess_dir()  # first: the ranks a multi-device job starts report into it too
    devices, queues = _worker_queues(args)
    # What this worker can run, for the task and for its announcements (waiting reasons).
    os.environ["GANFORGE_WORKER_DEVICES"] = str(devices)
    os.environ["GANFORGE_WORKER_QUEUES"] = queues
    settings = _settings()
    configure_logging(settings.log_json)
    app = make_celery(settings.broker_url, include=["ganforge.worker.tasks"])
    if args.metrics_port is not None:
        _serve_worker_metrics(args.metrics_host, args.metrics_port)
    argv = ["worker", "--pool=solo", "--concurrency=1", f"--queues={queues}", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    app.worker_main(argv)
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or a CLIError saying why not (werkzeug would print and exit)."""
    from werkzeug.serving import get_sockaddr, select_address_family

    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "posix":  # as socketserver does: a restart may reuse a port in TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = {errno.EADDRINUSE: "the port is already in use (another `ganforge up`?)",
                  errno.EACCES: "permission denied (ports below 1024 need privileges)",
                  errno.EADDRNOTAVAIL: "this machine has no such address"}.get(exc.errno, exc.strerror or str(exc))
        raise CLIError(f"cannot listen on {host}:{port}: {reason}; choose another with --port", 1) from None
    return sock


def _bind_embedded(host: str, port: int):
    """The API's server (werkzeug, threaded) on a bound socket, not serving yet: ``up`` binds
    before it starts a worker, so a port already taken ends it with nothing left behind."""
    from werkzeug.serving import make_server

    from ganforge.api import create_app
    from ganforge.api.logging import queryless_request_handler

    sock = _listen(host, port)
    try:
        server = make_server(host, sock.getsockname()[1], create_app(), threaded=True,
                             request_handler=queryless_request_handler(), fd=sock.fileno())
    finally:
        sock.close()  # werkzeug holds its own duplicate of the descriptor
    server.server_port = server.socket.getsockname()[1]  # set by server_bind, which a given fd skips
    return server


def _start_serving(server) -> None:
    threading.Thread(target=server.serve_forever, name="api", daemon=True).start()


def _serve_embedded(host: str, port: int):
    """The API on a thread of this process; returns the server."""
    server = _bind_embedded(host, port)
    _start_serving(server)
    return server


def cmd_api(args: argparse.Namespace) -> int:
    settings = _settings()
    _check_embedded_host(settings, args.host)
    if settings.is_embedded:
        server = _serve_embedded(args.host, args.port)
        print(f"ganforge API on http://{args.host}:{server.server_port} (embedded; Ctrl-C stops)", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        server.shutdown()
        return 0
    prometheus_multiprocess_dir()  # before gunicorn forks: its processes' metrics are summed at each scrape
    os.execvp(sys.executable, gunicorn_argv(args.host, args.port, args.workers, args.threads))
    return 0


def prometheus_multiprocess_dir() -> Path:
    """PROMETHEUS_MULTIPROC_DIR for this process and its children (gunicorn's workers, a worker's
    training ranks), emptied of an earlier run's files; a new temporary folder when unset.
    Must run before prometheus-client is imported (ganforge.jobs.telemetry)."""
    import tempfile

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="ganforge-prometheus-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def _serve_worker_metrics(host: str, port: int) -> None:
    """The worker's /metrics on its own port (prometheus-client's server, a daemon thread): its
    lease renewals and losses, upload retries and the running job's speed, its training ranks'
    included (they share its PROMETHEUS_MULTIPROC_DIR)."""
    from prometheus_client import start_http_server

    from ganforge.jobs import telemetry

    try:
        start_http_server(port, addr=host, registry=telemetry.registry())
    except OSError as exc:
        raise CLIError(f"cannot serve the worker's metrics on {host}:{port}: {exc.strerror or exc}; "
                       "choose another --metrics-port", 1) from None


def _usable_cpus() -> int:
    """CPUs this process may run on (a container's or taskset's limit, where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gunicorn_argv(host: str, port: int, workers: int | None = None, threads: int = 4,
                  reuse_port: bool = True) -> list[str]:
    """The production API server's command line (``ganforge api``; bench/service.py runs the same).

    gthread workers keep connections alive (clients poll); the app logs each request itself.
    One worker per core, 4 threads each (room for slow requests) and a listening socket per
    worker (SO_REUSEPORT, so the kernel spreads the keep-alive connections over the workers):
    the defaults bench/service.py settled on, figures in bench/README.md ("GET /v1/jobs/{id}").
    """
    from ganforge.api.logging import GUNICORN_ACCESS_FORMAT

    argv = [sys.executable, "-m", "gunicorn", "-c", "python:ganforge.api.gunicorn_hooks", "--bind", f"{host}:{port}",
            "--workers", str(workers or _usable_cpus()), "--worker-class", "gthread", "--threads", str(threads),
            "--keep-alive", "5", "--access-logformat", GUNICORN_ACCESS_FORMAT]
    return argv + (["--reuse-port"] if reuse_port else []) + ["ganforge.api:create_app()"]


def _spawn_worker(env: dict[str, str], queues: str | None, devices: int | None, log_path: Path) -> subprocess.Popen:
    handle = log_path.open("ab")
    argv = [sys.executable, "-m", "ganforge.cli", "worker"]
    argv += ["--queues", queues] if queues else []
    argv += ["--devices", str(devices)] if devices is not None else []
    # Its own session: a Ctrl-C in the terminal reaches `up` alone, which then drains the worker
    # (SIGTERM) instead of both racing. GANFORGE_UP_PID makes the worker follow `up` if `up` is killed.
    env = {**env, "GANFORGE_UP_PID": str(os.getpid())}
    try:
        return subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        handle.close()


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def cmd_up(args: argparse.Namespace) -> int:
    """Everything on this machine: database, store and broker in one folder, the API, a worker.

    The API socket is bound before the worker starts (a taken port leaves nothing running), and
    every way out (the job ended, Ctrl-C, SIGTERM, SIGHUP, an error) stops the worker: SIGTERM
    (it drains: the running job checkpoints and is requeued), then SIGKILL after a grace period
    or at a second signal. If `up` itself is killed, the worker gets SIGTERM from the kernel.
    """
    if args.data_dir:
        os.environ["GANFORGE_HOME"] = str(Path(args.data_dir).resolve())
    os.environ.setdefault("GANFORGE_MODE", "embedded")
    settings = _settings()
    _check_embedded_host(settings, args.host)
    settings.ensure_data_dir()
    from ganforge.jobs.logs import configure_logging
    from ganforge.jobs.migrate import upgrade

    configure_logging(settings.log_json, stream=(settings.data_dir / "api.log").open("a"))
    upgrade(settings.database_url)
    server = _bind_embedded(args.host, args.port)
    worker: subprocess.Popen | None = None
    stopping = {"now": False}

    def on_signal(signum, frame):
        # The first one unwinds to the `finally` below, like Ctrl-C; one arriving while stopping
        # (a second Ctrl-C) cuts the worker's grace period short.
        if stopping["now"]:
            if worker is not None and worker.poll() is None:
                worker.kill()
            return
        stopping["now"] = True
        raise KeyboardInterrupt

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    code = 0
    serving = False
    try:
        worker = _spawn_worker(dict(os.environ), args.queues, args.devices, settings.data_dir / "worker.log")
        _start_serving(server)
        serving = True
        url = f"http://{args.host}:{server.server_port}"
        print(f"ganforge is up at {url} (data in {settings.data_dir}; worker log {settings.data_dir / 'worker.log'}; "
              "Ctrl-C stops both)", flush=True)
        if args.submit:
            def worker_alive() -> None:
                if worker.poll() is not None:
                    raise CLIError(f"the worker exited (code {worker.returncode}); see {settings.data_dir / 'worker.log'}")

            code = submit_and_wait(Client(url), args.submit, show_progress=True, json_out=False,
                                   fetch_to=Path(args.fetch_to) if args.fetch_to else None, alive=worker_alive,
                                   detach_on_interrupt=False)
            if args.exit_when_done:
                return code
        while True:
            signal.pause()
    except KeyboardInterrupt:
        code = 130
    finally:
        stopping["now"] = True
        if worker is not None:
            print("stopping the worker (the running job, if any, checkpoints and is requeued)...",
                  file=sys.stderr, flush=True)
            _stop(worker)
        if serving:
            server.shutdown()
        server.server_close()
    return code


def _stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def add_commands(sub: argparse._SubParsersAction) -> None:
    data_dir_help = ("the embedded data folder (database, broker, artifacts): default $GANFORGE_HOME, "
                     "else ~/.ganforge")
    p = add_command(sub, "up", "run the whole service on this machine: the API and a worker, with SQLite, a local "
                    "store and a serverless broker in one folder; Ctrl-C or SIGTERM stops both",
                    ["ganforge up", "ganforge up --port 8081 --data-dir ~/gan-runs",
                     "ganforge up --submit ring8 --exit-when-done --fetch-to out/"])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (embedded mode: loopback only; "
                   "default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 picks a free one)")
    p.add_argument("--data-dir", help=data_dir_help)
    p.add_argument("--devices", type=int, help="devices the embedded worker trains on: jobs of up to N devices "
                   "(default: every visible GPU, or 1 on the CPU; N CPU processes with gloo when there is no GPU)")
    p.add_argument("--queues", help="queues the worker serves (default: from --devices, e.g. cpu,cpu-x2)")
    p.add_argument("--submit", metavar="SPEC", help="submit this spec (a file or a preset's name) once up, and follow "
                   "it with a progress bar")
    p.add_argument("--exit-when-done", action="store_true", help="with --submit: stop the service when the job ends")
    p.add_argument("--fetch-to", metavar="DIR", help="with --submit: download the sample grids and final generator here")
    p.set_defaults(func=needs_service(cmd_up))

    p = add_command(sub, "api", "serve the HTTP API alone (gunicorn in production; a thread in embedded mode)",
                    ["ganforge api --port 8081", "ganforge api --host 0.0.0.0 --workers 4   # GANFORGE_MODE=production"])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--workers", type=int, help="gunicorn worker processes (default: one per CPU)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker process (default 4)")
    p.set_defaults(func=needs_service(cmd_api))

    p = add_command(sub, "worker", "run a Celery worker: one per host, training jobs of up to --devices devices",
                    ["ganforge worker", "ganforge worker --devices 4 --hostname gpu-node-1",
                     "ganforge worker --metrics-port 9101   # Prometheus scrapes http://HOST:9101/metrics"])
    p.add_argument("--devices", type=int, help="devices this worker trains on (default: every visible GPU, or 1 on "
                   "the CPU); it takes jobs of 1..N devices, starting N-device jobs through torch's launcher")
    p.add_argument("--queues", help="override the queues served (default: from --devices: gpu,gpu-x2,...,cpu "
                   "or cpu,cpu-x2,...)")
    p.add_argument("--hostname", help="the worker's name in Celery (default: celery@<host>)")
    p.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics (lease renewals and "
                   "losses, upload retries, the running job's steps/s and images/s) on this port at /metrics")
    p.add_argument("--metrics-host", default="0.0.0.0", help="with --metrics-port: the address to listen on "
                   "(default 0.0.0.0, for a Prometheus on another host; the figures hold no job data)")
    p.set_defaults(func=needs_service(cmd_worker))

    p = add_command(sub, "reconcile", "requeue jobs whose worker died or whose broker message was lost "
                                      "(workers do this themselves; for cron or maintenance)",
                    ["ganforge reconcile --once --json"])
    p.add_argument("--once", action="store_true", help="one pass, then exit (default: a pass every "
                   "GANFORGE_RECONCILE_SECONDS)")
    p.add_argument("--json", action="store_true", help="each pass's counts as a JSON line")
    p.set_defaults(func=needs_service(cmd_reconcile))

    p = add_command(sub, "keys", "API keys (operator commands on the database: no API, no key needed)",
                    ["ganforge keys create --tenant acme", "ganforge keys list --data-dir ~/gan-runs",
                     "ganforge keys revoke 5b0c..."])
    keys = p.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")
    k = add_command(keys, "create", "a new key; printed once, alone on the last line of stdout",
                    ["ganforge keys create --tenant acme", "ganforge keys create --tenant ops --admin"])
    k.add_argument("--tenant", required=True, help="the tenant the key acts for (lowercase letters, digits, - and _)")
    k.add_argument("--admin", action="store_true", help="may read and cancel every tenant's jobs")
    k.add_argument("--data-dir", help=data_dir_help)
    k = add_command(keys, "list", "every key: id, prefix, tenant, admin, state", ["ganforge keys list"])
    k.add_argument("--data-dir", help=data_dir_help)
    k = add_command(keys, "revoke", "revoke a key by id", ["ganforge keys revoke 5b0c..."])
    k.add_argument("id", help="the key's id (from `ganforge keys list`)")
    k.add_argument("--data-dir", help=data_dir_help)
    p.set_defaults(func=needs_service(cmd_keys))

    p = add_command(sub, "db", "database migrations (Alembic)", ["ganforge db upgrade", "ganforge db downgrade -1"])
    p.add_argument("action", choices=("upgrade", "downgrade"), help="upgrade or downgrade the schema")
    p.add_argument("revision", nargs="?", help="target revision (default: head for upgrade, -1 for downgrade)")
    p.add_argument("--data-dir", help=data_dir_help)
    p.set_defaults(func=needs_service(cmd_db))
