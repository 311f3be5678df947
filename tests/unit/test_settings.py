"""ganforge.jobs.settings.Settings: the service's one reader of the environment (pydantic-settings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gan_core
from gan_core.cli import data_config_from_env
from ganforge.jobs.settings import Settings, SettingsError

PRODUCTION = {"GANFORGE_MODE": "production", "GANFORGE_DATABASE_URL": "postgresql://db/x",
              "GANFORGE_BROKER_URL": "redis://r/0", "GANFORGE_STORAGE_URL": "s3://bucket"}


def test_variables_by_their_names_and_embedded_defaults(tmp_path):
    settings = Settings.from_env({"GANFORGE_HOME": str(tmp_path), "GANFORGE_PRESIGN_TTL": "30",
                                  "GANFORGE_DATASET_S3_BUCKETS": "A, b", "GANFORGE_LOG_JSON": "0",
                                  "GANFORGE_LEASE_SECONDS": "", "AWS_ENDPOINT_URL": "http://minio:9000"})
    assert settings.presign_ttl_seconds == 30 and settings.lease_seconds == 60  # empty: the default
    assert settings.dataset_s3_buckets == ("a", "b") and settings.log_json is False
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.database_url == f"sqlite:///{tmp_path / 'ganforge.db'}"
    assert settings.storage_url == f"file://{tmp_path / 'artifacts'}"
    assert settings.auth == "off" and settings.allow_local_datasets


def test_constructing_reads_nothing_and_from_env_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("GANFORGE_LEASE_SECONDS", "7")
    assert Settings().lease_seconds == 60
    assert Settings(lease_seconds=5).with_(reconcile_seconds=3).lease_seconds == 5
    assert Settings.from_env().lease_seconds == 7


@pytest.mark.parametrize(("env", "message"), [
    ({"GANFORGE_MAX_STEPS": "lots"}, "GANFORGE_MAX_STEPS must be an integer, not 'lots'"),
    ({"GANFORGE_AUTH_CACHE_SECONDS": "-1"}, "GANFORGE_AUTH_CACHE_SECONDS must be a number >= 0"),
    ({"GANFORGE_ALLOW_LOCAL_DATASETS": "perhaps"}, "GANFORGE_ALLOW_LOCAL_DATASETS must be 1/0"),
    ({"GANFORGE_MODE": "prod"}, "GANFORGE_MODE must be 'embedded' or 'production', not 'prod'"),
    ({"GANFORGE_AUTH": "maybe"}, "GANFORGE_AUTH must be 'off' or 'required'"),
    ({"GANFORGE_DATASET_MIRRORS": "{no"}, "GANFORGE_DATASET_MIRRORS is not valid JSON"),
    ({"GANFORGE_STORAGE_URL": "http://x"}, "GANFORGE_STORAGE_URL must be s3://"),
    ({"GANFORGE_MODE": "production"}, "production mode needs GANFORGE_DATABASE_URL, GANFORGE_BROKER_URL"),
    ({**PRODUCTION, "GANFORGE_AUTH": "off"}, "production mode needs GANFORGE_AUTH=required"),
    ({**PRODUCTION, "GANFORGE_ALLOW_LOCAL_DATASETS": "1"}, "GANFORGE_ALLOW_LOCAL_DATASETS cannot be on in production"),
])
def test_a_bad_value_names_its_variable(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_production_defaults():
    settings = Settings.from_env(PRODUCTION)
    assert settings.auth_required and not settings.allow_local_datasets
    assert settings.database_url == "postgresql://db/x"


def test_gan_core_gets_a_plain_data_config_equal_to_the_local_clis(tmp_path):
    env = {"GANFORGE_DATA_DIR": str(tmp_path / "d"), "GANFORGE_CACHE_DIR": str(tmp_path / "c"),
           "GANFORGE_DATASET_MIRRORS": '{"mnist": "http://127.0.0.1:8000/mnist/"}'}
    config = Settings.from_env(env).data_config()
    assert config == data_config_from_env(env)
    assert config.data_dir == tmp_path / "d" and config.mirrors_for("mnist") == ("http://127.0.0.1:8000/mnist/",)
    assert Settings.from_env({}).data_config() == data_config_from_env({})
    with pytest.raises(SettingsError, match="GANFORGE_DATASET_MIRRORS.*unknown dataset 'mnsit'"):
        Settings.from_env({"GANFORGE_DATASET_MIRRORS": '{"mnsit": ["http://x/"]}'}).data_config()


def test_ensure_data_dir_creates_the_folder(tmp_path):
    settings = Settings(data_dir=tmp_path / "a" / "home")
    assert settings.ensure_data_dir() == tmp_path / "a" / "home" and (tmp_path / "a" / "home").is_dir()


def test_the_library_reads_no_data_variable_but_in_its_command_line():
    """gan_core takes a DataConfig; only gan_core/cli.py (the local command line) reads these."""
    names = re.compile(r"GANFORGE_(DATA_DIR|CACHE_DIR|DATASET_MIRRORS)")
    root = Path(gan_core.__path__[0])
    readers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if names.search(p.read_text()))
    assert readers == ["cli.py"]
