"""One settings object, read from the environment once (pydantic-settings).

Embedded mode (no environment at all) keeps everything under one data directory: a SQLite
database, a local-directory artifact store and a broker that needs no server (kombu's SQLAlchemy
transport on a second SQLite file). Production mode (``GANFORGE_MODE=production``) insists on
explicit URLs and refuses the embedded defaults.

This is the one reader of GANFORGE_* variables for the service; gan_core gets a plain
``DataConfig`` from ``Settings.data_config()``. ``Settings(...)`` takes the field names and reads
nothing (tests); ``Settings.from_env()`` reads the environment (or a given mapping) by the
variable names below and turns every bad value into a ``SettingsError`` naming the variable.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

if TYPE_CHECKING:
    from gan_core.data import DataConfig
    from gan_core.data.archive import ArchiveLimits


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _env(name: str, default: Any = ..., *more_names: str, **kwargs: Any) -> Any:
    """A field read from the variable ``name`` (then ``more_names``) by ``from_env``."""
    alias = AliasChoices(name, *more_names) if more_names else name
    if default is not ...:
        kwargs["default"] = default
    return Field(validation_alias=alias, **kwargs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True,
        validate_by_name=True,  # Settings(lease_seconds=5) as well as GANFORGE_LEASE_SECONDS
        validate_by_alias=True,
        case_sensitive=True,
        env_ignore_empty=True,  # VAR= means the default, as an unset VAR
        enable_decoding=False,  # lists are comma-separated and mirrors JSON: parsed below, with messages
        extra="ignore",
    )

    mode: Literal["embedded", "production"] = _env("GANFORGE_MODE", "embedded")
    data_dir: Path = _env("GANFORGE_HOME", default_factory=lambda: Path.home() / ".ganforge")
    database_url: str = _env("GANFORGE_DATABASE_URL", "")
    broker_url: str = _env("GANFORGE_BROKER_URL", "")
    storage_url: str = _env("GANFORGE_STORAGE_URL", "")
    s3_endpoint_url: str | None = _env("AWS_ENDPOINT_URL_S3", None, "AWS_ENDPOINT_URL")
    s3_region: str | None = _env("AWS_DEFAULT_REGION", None, "AWS_REGION")
    presign_ttl_seconds: int = _env("GANFORGE_PRESIGN_TTL", 900)
    # views of finished jobs kept per API process (0: none); api/finished_views.py
    finished_view_cache: int = _env("GANFORGE_FINISHED_VIEW_CACHE", 2048)
    # ... each for this long: a label edit (PATCH) through another API process shows within it
    finished_view_seconds: float = _env("GANFORGE_FINISHED_VIEW_SECONDS", 5.0, ge=0)
    max_body_bytes: int = _env("GANFORGE_MAX_BODY_BYTES", 1_000_000)
    max_steps: int = _env("GANFORGE_MAX_STEPS", 1_000_000)
    max_batch_size: int = _env("GANFORGE_MAX_BATCH_SIZE", 4096)
    max_eval_samples: int = _env("GANFORGE_MAX_EVAL_SAMPLES", 50_000)
    max_generate_samples: int = _env("GANFORGE_MAX_GENERATE_SAMPLES", 1024)
    max_devices: int = _env("GANFORGE_MAX_DEVICES", 8)  # resources.devices of one job
    max_trials_per_sweep: int = _env("GANFORGE_MAX_TRIALS_PER_SWEEP", 256)  # jobs/sweep_spec.py
    # devices this worker trains on (0: all visible GPUs, or 1) and the queues it serves (set by ganforge worker)
    worker_devices: int = _env("GANFORGE_WORKER_DEVICES", 0)
    worker_queues: tuple[str, ...] = _env("GANFORGE_WORKER_QUEUES", ())
    lease_seconds: int = _env("GANFORGE_LEASE_SECONDS", 60)
    # SIGTERM: time to checkpoint, release and requeue the running job
    stop_grace_seconds: int = _env("GANFORGE_STOP_GRACE_SECONDS", 60)
    reconcile_seconds: int = _env("GANFORGE_RECONCILE_SECONDS", 10)  # how often each worker's reconciler looks for lost jobs
    # a queued job not picked up for this long is sent to the broker again
    requeue_after_seconds: int = _env("GANFORGE_REQUEUE_AFTER_SECONDS", 60)
    # how long the end of a job waits for the store to come back
    upload_patience_seconds: int = _env("GANFORGE_UPLOAD_PATIENCE_SECONDS", 900)
    worker_id: str = _env("GANFORGE_WORKER_ID", "")
    log_json: bool = _env("GANFORGE_LOG_JSON", True)
    # a job's own log lines (worker/job_logs.py): a chunk in the store every N lines or S seconds
    job_log_chunk_lines: int = _env("GANFORGE_JOB_LOG_CHUNK_LINES", 500, ge=1)
    job_log_flush_seconds: float = _env("GANFORGE_JOB_LOG_FLUSH_SECONDS", 5.0, gt=0)
    signing_secret: str = _env("GANFORGE_SECRET_KEY", "", repr=False)  # signs artifact download URLs
    # ---- webhooks (jobs/notify.py): HMAC-SHA256 key of the bodies; none: a submit with notify is refused ----
    webhook_secret: str = _env("GANFORGE_WEBHOOK_SECRET", "", repr=False)
    # http:// and private addresses as webhook targets (a trusted network, tests); off: public https only
    webhook_allow_private: bool = _env("GANFORGE_WEBHOOK_ALLOW_PRIVATE", False)
    webhook_attempts: int = _env("GANFORGE_WEBHOOK_ATTEMPTS", 5, ge=1, le=20)  # then the delivery gives up
    webhook_backoff_seconds: float = _env("GANFORGE_WEBHOOK_BACKOFF_SECONDS", 2.0, gt=0)  # doubling, at most 60 s
    webhook_timeout_seconds: float = _env("GANFORGE_WEBHOOK_TIMEOUT_SECONDS", 10.0, gt=0)
    # ---- training data: handed to gan_core as a DataConfig (data_config()) ----
    dataset_dir: Path | None = _env("GANFORGE_DATA_DIR", None)  # one folder per dataset (read only)
    dataset_cache_dir: Path | None = _env("GANFORGE_CACHE_DIR", None)  # downloads land here (default: gan_core's)
    # {"mnist": ["http://mirror/mnist/"]}: per dataset, replaces gan_core's default mirrors
    dataset_mirrors: dict[str, tuple[str, ...]] | None = _env("GANFORGE_DATASET_MIRRORS", None)
    # ---- security (see api/auth.py, api/limits.py, jobs/datasets.py) ----
    # off (embedded default: one local admin) | required (production: always)
    auth: Literal["off", "required"] = _env("GANFORGE_AUTH", "off")
    auth_cache_seconds: float = _env("GANFORGE_AUTH_CACHE_SECONDS", 5.0, ge=0)  # key hash -> principal cached; revocation lag
    max_queued_per_tenant: int = _env("GANFORGE_MAX_QUEUED_PER_TENANT", 100)  # past this many queued jobs: 429
    max_active_per_tenant: int = _env("GANFORGE_MAX_ACTIVE_PER_TENANT", 200)  # queued + running; past it: 429
    # per tenant, sliding 60 s window over the jobs table: 429 + Retry-After
    submit_rate_per_minute: int = _env("GANFORGE_SUBMIT_RATE_PER_MINUTE", 60)
    dataset_s3_buckets: tuple[str, ...] = _env("GANFORGE_DATASET_S3_BUCKETS", ())  # buckets tenants may name
    dataset_https_hosts: tuple[str, ...] = _env("GANFORGE_DATASET_HTTPS_HOSTS", ())  # empty = any public host
    # server paths in dataset.path; embedded only (one trusted user)
    allow_local_datasets: bool = _env("GANFORGE_ALLOW_LOCAL_DATASETS", True)
    max_dataset_bytes: int = _env("GANFORGE_MAX_DATASET_BYTES", 2 * 1024**3, gt=0)  # download and archive cap
    # files in one image archive, upload or S3 prefix (gan_core.data.archive.ArchiveLimits)
    max_dataset_files: int = _env("GANFORGE_MAX_DATASET_FILES", 100_000, gt=0)
    # uploaded datasets (POST /v1/datasets) a tenant may keep at once; the store holds each archive
    max_datasets_per_tenant: int = _env("GANFORGE_MAX_DATASETS_PER_TENANT", 100, gt=0)

    # ---- how variables are read ------------------------------------------------------------
    @field_validator("worker_queues", "dataset_s3_buckets", "dataset_https_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("log_json", mode="before")
    @classmethod
    def _lenient_flag(cls, value: Any) -> Any:
        # GANFORGE_LOG_JSON: anything but 0/false/no means JSON lines
        return value not in ("0", "false", "no") if isinstance(value, str) else value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("dataset_mirrors", mode="before")
    @classmethod
    def _mirrors(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not valid JSON: {exc}") from None
        if isinstance(value, Mapping):  # one URL or a list of them per dataset
            return {name: (urls,) if isinstance(urls, str) else urls for name, urls in value.items()}
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings,)  # Settings(...) reads nothing; from_env() passes the variables in

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings from ``env`` (default: ``os.environ``), with the embedded defaults filled
        in and production's rules checked; a bad value is a SettingsError naming its variable."""
        env = os.environ if env is None else env
        try:
            settings = cls(**_Variables(cls, env)())
        except ValidationError as exc:
            raise SettingsError(_describe(cls, exc)) from None
        return settings._resolved(explicit_auth="GANFORGE_AUTH" in env and env["GANFORGE_AUTH"] != "",
                                  explicit_local="GANFORGE_ALLOW_LOCAL_DATASETS" in env
                                  and env["GANFORGE_ALLOW_LOCAL_DATASETS"] != "")

    def _resolved(self, explicit_auth: bool, explicit_local: bool) -> "Settings":
        production = self.mode == "production"
        changes: dict[str, Any] = {}
        if production:
            missing = [name for name, value in (("GANFORGE_DATABASE_URL", self.database_url),
                                                ("GANFORGE_BROKER_URL", self.broker_url),
                                                ("GANFORGE_STORAGE_URL", self.storage_url)) if not value]
            if missing:
                raise SettingsError(f"production mode needs {', '.join(missing)}")
        else:
            changes["database_url"] = self.database_url or f"sqlite:///{self.data_dir / 'ganforge.db'}"
            changes["broker_url"] = self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
            changes["storage_url"] = self.storage_url or f"file://{self.data_dir / 'artifacts'}"
        if not changes.get("storage_url", self.storage_url).startswith(("s3://", "file://")):
            raise SettingsError("GANFORGE_STORAGE_URL must be s3://bucket[/prefix] or file:///path")
        auth = self.auth if explicit_auth else ("required" if production else "off")
        if production and auth != "required":
            raise SettingsError("production mode needs GANFORGE_AUTH=required (API keys); 'off' is for embedded use only")
        allow_local = self.allow_local_datasets if explicit_local else not production
        if production and allow_local:
            raise SettingsError("GANFORGE_ALLOW_LOCAL_DATASETS cannot be on in production: tenants would read server files")
        return self.with_(auth=auth, allow_local_datasets=allow_local, **changes)

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

    def with_(self, **changes: Any) -> "Settings":
        return self.model_copy(update=changes)

    def ensure_data_dir(self) -> Path:
        """The data directory, created if missing (embedded mode's database, broker, store and
        secret live there; ``ganforge up`` writes its logs there)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir

    def data_config(self) -> "DataConfig":
        """Where gan_core finds datasets (GANFORGE_DATA_DIR, GANFORGE_CACHE_DIR,
        GANFORGE_DATASET_MIRRORS), as the plain object it takes."""
        # Deliberately lazy: gan_core.data loads torch, which the API's and operator commands'
        # settings never need.
        from gan_core.data import DataConfig, DataError

        kwargs: dict[str, Any] = {"data_dir": self.dataset_dir, "mirrors": self.dataset_mirrors,
                                  "archive_limits": self.archive_limits()}
        if self.dataset_cache_dir is not None:
            kwargs["cache_dir"] = self.dataset_cache_dir
        try:
            return DataConfig(**kwargs)
        except DataError as exc:
            raise SettingsError(f"GANFORGE_DATASET_MIRRORS: {exc}") from None

    def archive_limits(self) -> "ArchiveLimits":
        """What an image archive may hold (GANFORGE_MAX_DATASET_FILES, GANFORGE_MAX_DATASET_BYTES)."""
        from gan_core.data.archive import ArchiveLimits

        return ArchiveLimits(max_files=self.max_dataset_files, max_bytes=self.max_dataset_bytes)

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
            self.ensure_data_dir()
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


class _Variables(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests pass dicts)."""

    def __init__(self, settings_cls: type[Settings], env: Mapping[str, str]):
        self._given = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value for name, value in self._given.items() if value != ""}


def _variable(cls: type[Settings], loc: Any) -> str:
    """The variable a validation error's location stands for."""
    field = cls.model_fields.get(str(loc))
    if field is None:
        return str(loc)  # already the variable's name
    alias = field.validation_alias
    return alias.choices[0] if isinstance(alias, AliasChoices) else str(alias)


_KINDS = {"int_parsing": "an integer", "int_from_float": "an integer", "float_parsing": "a number",
          "bool_parsing": "1/0 (true/false)", "greater_than_equal": "a number >= 0"}


def _describe(cls: type[Settings], exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = _variable(cls, error["loc"][0] if error["loc"] else "")
    raw = error.get("input")
    if error["type"] in _KINDS:
        return f"{name} must be {_KINDS[error['type']]}, not {raw!r}"
    if error["type"] == "literal_error":
        return f"{name} must be {error['ctx']['expected']}, not {raw!r}"
    if error["type"] == "value_error":
        return f"{name} {error['ctx']['error']}"
    return f"{name}: {error['msg']}"
