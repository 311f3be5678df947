"""One settings object, read from the environment once.

Embedded mode (no environment at all) keeps everything under one data directory: a SQLite
database, a local-directory artifact store and a broker that needs no server (kombu's SQLAlchemy
transport on a second SQLite file). Production mode (``GANFORGE_MODE=production``) insists on
explicit URLs and refuses the embedded defaults.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if not value >= 0:
        raise SettingsError(f"{name} must be a number >= 0, not {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1/0 (true/false), not {raw!r}")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in env.get(name, "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    mode: str = "embedded"  # embedded | production
    data_dir: Path = field(default_factory=lambda: Path.home() / ".ganforge")
    database_url: str = ""
    broker_url: str = ""
    storage_url: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    presign_ttl_seconds: int = 900
    finished_view_cache: int = 2048  # views of finished jobs kept per API process (0: none); api/finished_views.py
    max_body_bytes: int = 1_000_000
    max_steps: int = 1_000_000
    max_batch_size: int = 4096
    max_eval_samples: int = 50_000
    max_generate_samples: int = 1024
    max_devices: int = 8  # GANFORGE_MAX_DEVICES: resources.devices of one job
    worker_devices: int = 0  # GANFORGE_WORKER_DEVICES: devices this worker trains on (0: all visible GPUs, or 1)
    worker_queues: tuple[str, ...] = ()  # GANFORGE_WORKER_QUEUES: the queues this worker serves (set by ganforge worker)
    lease_seconds: int = 60
    stop_grace_seconds: int = 60  # SIGTERM: time to checkpoint, release and requeue the running job
    reconcile_seconds: int = 10  # how often each worker's reconciler looks for lost jobs
    requeue_after_seconds: int = 60  # a queued job not picked up for this long is sent to the broker again
    upload_patience_seconds: int = 900  # how long the end of a job waits for the store to come back
    worker_id: str = ""
    dataset_dir: Path | None = None  # GANFORGE_DATA_DIR: one folder per dataset
    log_json: bool = True
    signing_secret: str = field(default="", repr=False)  # GANFORGE_SECRET_KEY: signs artifact download URLs
    # ---- security (see api/auth.py, api/limits.py, jobs/datasets.py) ----
    auth: str = "off"  # GANFORGE_AUTH: off (embedded default: one local admin) | required (production: always)
    auth_cache_seconds: float = 5.0  # key hash -> principal cached this long per process; revocation lag
    max_queued_per_tenant: int = 100  # submissions past this many queued jobs: 429
    max_active_per_tenant: int = 200  # queued + running; past it: 429
    submit_rate_per_minute: int = 60  # per tenant, sliding 60 s window over the jobs table: 429 + Retry-After
    dataset_s3_buckets: tuple[str, ...] = ()  # GANFORGE_DATASET_S3_BUCKETS: buckets tenants may name
    dataset_https_hosts: tuple[str, ...] = ()  # GANFORGE_DATASET_HTTPS_HOSTS: empty = any public host
    allow_local_datasets: bool = True  # server paths in dataset.path; embedded only (one trusted user)
    max_dataset_bytes: int = 2 * 1024**3  # GANFORGE_MAX_DATASET_BYTES: download cap

    # ---- derived --------------------------------------------------------------------------
    @property
    def spec_limits(self) -> dict[str, int]:
        return {"max_steps": self.max_steps, "max_batch_size": self.max_batch_size,
                "max_eval_samples": self.max_eval_samples, "max_devices": self.max_devices}

    @property
    def is_embedded(self) -> bool:
        return self.mode == "embedded"

    @property
    def auth_required(self) -> bool:
        return self.auth == "required"

    def resolve_signing_secret(self) -> str:
        """The URL-signing secret: GANFORGE_SECRET_KEY; required in production. Embedded mode
        without one generates a random secret once and keeps it in ``data_dir/secret_key``, so
        URLs stay valid across restarts and between processes sharing the folder."""
        if self.signing_secret:
            return self.signing_secret
        if not self.is_embedded:
            raise SettingsError("production mode needs GANFORGE_SECRET_KEY (signs artifact download URLs)")
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".secret_key.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            try:
                os.link(tmp, path)  # atomic and never overwrites: of two racing processes one secret wins
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        secret = path.read_text().strip()
        if not secret:
            raise SettingsError(f"{path} is empty; delete it to generate a new secret")
        return secret

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        mode = env.get("GANFORGE_MODE", "embedded")
        if mode not in ("embedded", "production"):
            raise SettingsError(f"GANFORGE_MODE must be 'embedded' or 'production', not {mode!r}")
        data_dir = Path(env.get("GANFORGE_HOME", str(Path.home() / ".ganforge"))).expanduser()
        database_url = env.get("GANFORGE_DATABASE_URL", "")
        broker_url = env.get("GANFORGE_BROKER_URL", "")
        storage_url = env.get("GANFORGE_STORAGE_URL", "")
        if mode == "production":
            missing = [name for name, value in (("GANFORGE_DATABASE_URL", database_url), ("GANFORGE_BROKER_URL", broker_url),
                                                ("GANFORGE_STORAGE_URL", storage_url)) if not value]
            if missing:
                raise SettingsError(f"production mode needs {', '.join(missing)}")
        else:
            database_url = database_url or f"sqlite:///{data_dir / 'ganforge.db'}"
            broker_url = broker_url or f"sqla+sqlite:///{data_dir / 'broker.db'}"
            storage_url = storage_url or f"file://{data_dir / 'artifacts'}"
        if not storage_url.startswith(("s3://", "file://")):
            raise SettingsError("GANFORGE_STORAGE_URL must be s3://bucket[/prefix] or file:///path")
        dataset_dir = env.get("GANFORGE_DATA_DIR")
        auth = env.get("GANFORGE_AUTH", "required" if mode == "production" else "off")
        if auth not in ("off", "required"):
            raise SettingsError(f"GANFORGE_AUTH must be 'off' or 'required', not {auth!r}")
        if mode == "production" and auth != "required":
            raise SettingsError("production mode needs GANFORGE_AUTH=required (API keys); 'off' is for embedded use only")
        allow_local = _bool(env, "GANFORGE_ALLOW_LOCAL_DATASETS", mode == "embedded")
        if mode == "production" and allow_local:
            raise SettingsError("GANFORGE_ALLOW_LOCAL_DATASETS cannot be on in production: tenants would read server files")
        return cls(
            mode=mode,
            data_dir=data_dir,
            database_url=database_url,
            broker_url=broker_url,
            storage_url=storage_url,
            s3_endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            s3_region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or None,
            presign_ttl_seconds=_int(env, "GANFORGE_PRESIGN_TTL", 900),
            finished_view_cache=_int(env, "GANFORGE_FINISHED_VIEW_CACHE", 2048),
            max_body_bytes=_int(env, "GANFORGE_MAX_BODY_BYTES", 1_000_000),
            max_steps=_int(env, "GANFORGE_MAX_STEPS", 1_000_000),
            max_batch_size=_int(env, "GANFORGE_MAX_BATCH_SIZE", 4096),
            max_eval_samples=_int(env, "GANFORGE_MAX_EVAL_SAMPLES", 50_000),
            max_generate_samples=_int(env, "GANFORGE_MAX_GENERATE_SAMPLES", 1024),
            max_devices=_int(env, "GANFORGE_MAX_DEVICES", 8),
            worker_devices=_int(env, "GANFORGE_WORKER_DEVICES", 0),
            worker_queues=_list(env, "GANFORGE_WORKER_QUEUES"),
            lease_seconds=_int(env, "GANFORGE_LEASE_SECONDS", 60),
            stop_grace_seconds=_int(env, "GANFORGE_STOP_GRACE_SECONDS", 60),
            reconcile_seconds=_int(env, "GANFORGE_RECONCILE_SECONDS", 10),
            requeue_after_seconds=_int(env, "GANFORGE_REQUEUE_AFTER_SECONDS", 60),
            upload_patience_seconds=_int(env, "GANFORGE_UPLOAD_PATIENCE_SECONDS", 900),
            worker_id=env.get("GANFORGE_WORKER_ID", ""),
            dataset_dir=Path(dataset_dir) if dataset_dir else None,
            log_json=env.get("GANFORGE_LOG_JSON", "1") not in ("0", "false", "no"),
            signing_secret=env.get("GANFORGE_SECRET_KEY", ""),
            auth=auth,
            auth_cache_seconds=_float(env, "GANFORGE_AUTH_CACHE_SECONDS", 5.0),
            max_queued_per_tenant=_int(env, "GANFORGE_MAX_QUEUED_PER_TENANT", 100),
            max_active_per_tenant=_int(env, "GANFORGE_MAX_ACTIVE_PER_TENANT", 200),
            submit_rate_per_minute=_int(env, "GANFORGE_SUBMIT_RATE_PER_MINUTE", 60),
            dataset_s3_buckets=_list(env, "GANFORGE_DATASET_S3_BUCKETS"),
            dataset_https_hosts=_list(env, "GANFORGE_DATASET_HTTPS_HOSTS"),
            allow_local_datasets=allow_local,
            max_dataset_bytes=_int(env, "GANFORGE_MAX_DATASET_BYTES", 2 * 1024**3),
        )
