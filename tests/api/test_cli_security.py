"""`ganforge keys` (operator commands on the database), the embedded loopback rule, and the
client commands sending GANFORGE_API_KEY as a Bearer token to a real HTTP server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from ganforge.cli import main
from ganforge.jobs.db import Database
from ganforge.jobs.keys import principal_for
from ganforge.jobs.migrate import upgrade


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "home"
    for name in ("GANFORGE_MODE", "GANFORGE_DATABASE_URL", "GANFORGE_AUTH", "GANFORGE_API_KEY", "GANFORGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GANFORGE_HOME", str(home))
    home.mkdir()
    upgrade(f"sqlite:///{home / 'ganforge.db'}")
    return home


def test_keys_create_list_revoke(embedded_home, capsys):
    assert main(["keys", "create", "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("gf_")
    assert main(["keys", "create", "--tenant", "ops", "--admin"]) == 0
    admin_key = capsys.readouterr().out.strip().splitlines()[-1]
    db = Database(f"sqlite:///{embedded_home / 'ganforge.db'}")
    try:
        who = principal_for(db, key)
        assert (who.tenant, who.is_admin) == ("acme", False)
        assert principal_for(db, admin_key).is_admin
        assert main(["keys", "list"]) == 0
        listing = capsys.readouterr().out
        assert key[:10] in listing and key not in listing  # the prefix only, never the key
        assert main(["keys", "revoke", who.key_id]) == 0
        assert principal_for(db, key) is None
        assert "revoked" in (main(["keys", "list"]), capsys.readouterr().out)[1]
    finally:
        db.dispose()
    assert main(["keys", "revoke", "0" * 32]) == 2
    assert main(["keys", "create", "--tenant", "Bad Name!"]) == 2


def test_embedded_mode_refuses_to_listen_beyond_loopback(embedded_home, capsys):
    assert main(["api", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "127.0.0.1 only" in capsys.readouterr().err
    assert main(["up", "--host", "192.168.1.5", "--port", "0"]) == 2


def test_client_commands_send_the_api_key(embedded_home, monkeypatch, capsys):
    from ganforge.api import create_app
    from ganforge.jobs.settings import Settings

    monkeypatch.setenv("GANFORGE_AUTH", "required")
    monkeypatch.setenv("GANFORGE_AUTH_CACHE_SECONDS", "0")
    monkeypatch.setenv("GANFORGE_BROKER_URL", "memory://")
    settings = Settings.from_env()
    assert main(["keys", "create", "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert main(["list", "--url", url]) == 1  # no key: the CLI reports the 401
        assert "401 unauthorized" in capsys.readouterr().err
        monkeypatch.setenv("GANFORGE_API_KEY", key)
        assert main(["list", "--url", url]) == 0
        assert "no jobs" in capsys.readouterr().out
    finally:
        server.shutdown()
