"""Authentication, tenant isolation and submission limits through Flask's test client, on
SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from ganforge.jobs import lifecycle
from ganforge.jobs.keys import create_key, hash_key, list_keys, revoke_key
from ganforge.jobs.models import ApiKey, Job
from ganforge.jobs.settings import Settings, SettingsError

SPEC: dict[str, Any] = {
    "name": "ring",
    "dataset": {"name": "ring8"},
    "model": {"latent_dim": 2, "hidden_g": [16, 16], "hidden_d": [16, 16], "g_batchnorm": False},
    "train": {"steps": 3, "batch_size": 16, "seed": 1},
    "log_every": 1, "sample_every": 10, "checkpoint_every": 3, "eval": {"at_end": False}, "device": "cpu",
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


class Tenants:
    """An app with GANFORGE_AUTH=required and keys for tenants a, b and an admin; each tenant
    has one queued job and one running job with a sample grid, a checkpoint and a metric."""

    def __init__(self, h):
        self.h = h
        self.keys = {name: create_key(h.db, name)[1] for name in ("a", "b")}
        self.keys["admin"] = create_key(h.db, "ops", is_admin=True)[1]
        self.queued: dict[str, str] = {}
        self.running: dict[str, str] = {}
        self.artifacts: dict[str, list[str]] = {}
        for tenant in ("a", "b"):
            self.queued[tenant] = self.post(tenant, "/v1/jobs", json=SPEC).get_json()["id"]
            job_id = self.post(tenant, "/v1/jobs", json=SPEC).get_json()["id"]
            claim = lifecycle.claim(h.db, job_id, "test-worker", 60)
            self.running[tenant] = job_id
            lifecycle.record_metrics(h.db, job_id, claim.token, [(1, {"loss_d": 0.5})], 60)
            self.artifacts[tenant] = [
                self._artifact(job_id, claim.token, "sample_grid", f"jobs/{job_id}/samples/1.png", b"\x89PNGfake"),
                self._artifact(job_id, claim.token, "checkpoint", f"jobs/{job_id}/checkpoints/3.pt", b"not a checkpoint"),
            ]

    def _artifact(self, job_id: str, token: str, kind: str, key: str, data: bytes) -> str:
        stored = self.h.storage.put(key, data, "application/octet-stream")
        step = 1 if kind == "sample_grid" else 3
        return lifecycle.record_artifact(self.h.db, job_id, token, kind=kind, step=step, key=stored.key,
                                         size=stored.size, sha256=stored.sha256,
                                         content_type="application/octet-stream").id

    def get(self, who: str, path: str, **kw):
        return self.h.client.get(path, headers=bearer(self.keys[who]), **kw)

    def post(self, who: str, path: str, **kw):
        return self.h.client.post(path, headers=bearer(self.keys[who]), **kw)


@pytest.fixture
def tenants(make_api) -> Tenants:
    return Tenants(make_api(auth="required", auth_cache_seconds=0))


def job_requests(job_id: str, artifact_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every endpoint that names a job or an artifact."""
    return [
        ("GET", f"/v1/jobs/{job_id}", {}),
        ("GET", f"/v1/jobs/{job_id}/metrics", {}),
        ("GET", f"/v1/jobs/{job_id}/samples", {}),
        ("GET", f"/v1/jobs/{job_id}/checkpoints", {}),
        ("POST", f"/v1/jobs/{job_id}/generate", {"json": {"n": 4}}),
        ("POST", f"/v1/jobs/{job_id}/cancel", {}),
        ("GET", f"/v1/artifacts/{artifact_id}/content", {}),
    ]


@pytest.mark.parametrize("me, other", [("a", "b"), ("b", "a")])
def test_another_tenants_jobs_are_not_found_on_every_endpoint(tenants, me, other):
    for job_id in (tenants.queued[other], tenants.running[other]):
        for method, path, kw in job_requests(job_id, tenants.artifacts[other][0]):
            response = tenants.h.client.open(path, method=method, headers=bearer(tenants.keys[me]), **kw)
            assert response.status_code == 404, (method, path, response.get_data(as_text=True))
            assert response.get_json()["error"]["code"] == "not_found"
    # Nothing was cancelled by the attempts.
    with tenants.h.db.session() as session:
        assert session.scalar(select(Job.status).where(Job.id == tenants.queued[other])) == "queued"
        assert not session.scalar(select(Job.cancel_requested).where(Job.id == tenants.running[other]))
    # The list holds only my jobs, whatever the filter.
    for query in ("", "?status=queued", "?status=running", "?limit=1"):
        ids = {j["id"] for j in tenants.get(me, "/v1/jobs" + query).get_json()["items"]}
        assert ids and ids <= {tenants.queued[me], tenants.running[me]}, query


@pytest.mark.parametrize("me", ["a", "b"])
def test_a_tenant_reaches_its_own_jobs_on_every_endpoint(tenants, me):
    job_id = tenants.running[me]
    sample_id, checkpoint_id = tenants.artifacts[me]
    assert tenants.get(me, f"/v1/jobs/{job_id}").status_code == 200
    assert tenants.get(me, f"/v1/jobs/{job_id}/metrics").get_json()["series"]["loss_d"]["values"] == [0.5]
    samples = tenants.get(me, f"/v1/jobs/{job_id}/samples").get_json()["items"]
    assert [s["id"] for s in samples] == [sample_id]
    assert [c["id"] for c in tenants.get(me, f"/v1/jobs/{job_id}/checkpoints").get_json()["items"]] == [checkpoint_id]
    assert tenants.get(me, f"/v1/artifacts/{sample_id}/content").data == b"\x89PNGfake"
    # The checkpoint bytes are not a checkpoint: 409 (not 404) shows the job was found.
    assert tenants.post(me, f"/v1/jobs/{job_id}/generate", json={"n": 4}).status_code == 409
    assert tenants.post(me, f"/v1/jobs/{tenants.queued[me]}/cancel").get_json()["status"] == "cancelled"
    assert tenants.post(me, f"/v1/jobs/{job_id}/cancel").get_json()["cancel_requested"] is True


def test_jobs_belong_to_the_submitting_tenant(tenants):
    with tenants.h.db.session() as session:
        owners = dict(session.execute(select(Job.id, Job.tenant)).all())
    assert owners[tenants.queued["a"]] == owners[tenants.running["a"]] == "a"
    assert owners[tenants.queued["b"]] == owners[tenants.running["b"]] == "b"


def test_admin_sees_and_cancels_every_tenants_jobs(tenants):
    listed = {j["id"] for j in tenants.get("admin", "/v1/jobs").get_json()["items"]}
    assert listed == {*tenants.queued.values(), *tenants.running.values()}
    for tenant in ("a", "b"):
        assert tenants.get("admin", f"/v1/jobs/{tenants.running[tenant]}").status_code == 200
        assert tenants.get("admin", f"/v1/artifacts/{tenants.artifacts[tenant][0]}/content").status_code == 200
        assert tenants.post("admin", f"/v1/jobs/{tenants.queued[tenant]}/cancel").status_code == 200
    # An admin's own submissions go to the admin's tenant.
    job_id = tenants.post("admin", "/v1/jobs", json=SPEC).get_json()["id"]
    with tenants.h.db.session() as session:
        assert session.scalar(select(Job.tenant).where(Job.id == job_id)) == "ops"
    assert tenants.get("a", f"/v1/jobs/{job_id}").status_code == 404


def test_signed_urls_work_without_a_key_but_the_plain_path_needs_the_owner(tenants):
    sample_id = tenants.artifacts["a"][0]
    url = tenants.get("a", f"/v1/jobs/{tenants.running['a']}/samples").get_json()["items"][0]["url"]
    assert tenants.h.client.get(local(url)).data == b"\x89PNGfake"  # no Authorization: that is the point
    # The signature is per object: moved onto another artifact it is refused.
    other = local(url).replace(sample_id, tenants.artifacts["b"][0])
    assert tenants.h.client.get(other).status_code == 403
    unsigned = f"/v1/artifacts/{sample_id}/content"
    assert tenants.h.client.get(unsigned).status_code == 401
    assert tenants.get("b", unsigned).status_code == 404
    # Listing again issues a fresh URL (new expiry, new signature).
    import time
    time.sleep(1.1)
    again = tenants.get("a", f"/v1/jobs/{tenants.running['a']}/samples").get_json()["items"][0]["url"]
    assert again != url


@pytest.mark.parametrize("header", [
    None, "Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "Bearer gf_not-a-real-key", "Bearer not_our_format",
    "Bearer " + "gf_" + "x" * 500,
])
def test_missing_or_wrong_keys_are_401_everywhere(tenants, header):
    headers = {"Authorization": header} if header is not None else {}
    job_id = tenants.running["a"]
    for method, path, kw in [("GET", "/v1/jobs", {}), ("POST", "/v1/jobs", {"json": SPEC})] + job_requests(
            job_id, tenants.artifacts["a"][0]):
        response = tenants.h.client.open(path, method=method, headers=headers, **kw)
        assert response.status_code == 401, (header, method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.get_json()["error"]["code"] == "unauthorized"


def test_public_endpoints_need_no_key(tenants):
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert tenants.h.client.get(path).status_code == 200, path


def test_a_revoked_key_is_refused(tenants):
    job_id = tenants.running["a"]
    assert tenants.get("a", f"/v1/jobs/{job_id}").status_code == 200
    (row,) = [k for k in list_keys(tenants.h.db) if k.tenant == "a"]
    revoke_key(tenants.h.db, row.id)
    response = tenants.get("a", f"/v1/jobs/{job_id}")
    assert response.status_code == 401
    assert "revoked" in response.get_json()["error"]["message"]
    assert tenants.get("b", f"/v1/jobs/{tenants.running['b']}").status_code == 200  # others unaffected


def test_keys_are_stored_only_as_hashes(make_api):
    h = make_api()
    row, key = create_key(h.db, "acme")
    assert key.startswith("gf_") and len(key) >= 40
    with h.db.session() as session:
        stored = session.get(ApiKey, row.id)
        assert stored.key_hash == hash_key(key) and key not in (stored.key_hash, stored.prefix)
        assert key.startswith(stored.prefix) and len(stored.prefix) < 16
    assert create_key(h.db, "acme")[1] != key


def test_revocation_takes_effect_within_the_cache_ttl(make_api):
    from ganforge.api.auth import KeyCache

    h = make_api()
    row, key = create_key(h.db, "acme")
    now = [100.0]
    cache = KeyCache(h.db, ttl=5, clock=lambda: now[0])
    assert cache.lookup(key).tenant == "acme"
    revoke_key(h.db, row.id)
    assert cache.lookup(key) is not None  # still cached: the documented lag
    now[0] += 5.01
    assert cache.lookup(key) is None


def test_embedded_mode_without_keys_is_the_local_admin(api):
    response = api.client.post("/v1/jobs", json=SPEC)
    assert response.status_code == 201
    with api.db.session() as session:
        assert session.scalar(select(Job.tenant)) == "default"
    assert api.client.get("/v1/jobs").get_json()["items"][0]["id"] == response.get_json()["id"]


def test_production_refuses_to_run_without_auth(tmp_path):
    env = {"GANFORGE_MODE": "production", "GANFORGE_DATABASE_URL": f"sqlite:///{tmp_path}/db",
           "GANFORGE_BROKER_URL": "memory://", "GANFORGE_STORAGE_URL": f"file://{tmp_path}/a"}
    assert Settings.from_env(env).auth_required  # the production default
    with pytest.raises(SettingsError, match="GANFORGE_AUTH"):
        Settings.from_env({**env, "GANFORGE_AUTH": "off"})
    with pytest.raises(SettingsError, match="GANFORGE_AUTH"):
        Settings.from_env({**env, "GANFORGE_AUTH": "maybe"})
    assert not Settings.from_env({}).auth_required  # embedded default
    assert Settings.from_env({"GANFORGE_AUTH": "required"}).auth_required


# ---- limits ---------------------------------------------------------------------------------------
def test_submission_rate_limit_answers_429_with_retry_after(make_api):
    h = make_api(auth="required", auth_cache_seconds=0, submit_rate_per_minute=3)
    key_a, key_b = create_key(h.db, "a")[1], create_key(h.db, "b")[1]
    remaining = []
    for _ in range(3):
        response = h.client.post("/v1/jobs", json=SPEC, headers=bearer(key_a))
        assert response.status_code == 201
        assert response.headers["X-RateLimit-Limit"].startswith("3")
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    response = h.client.post("/v1/jobs", json=SPEC, headers=bearer(key_a))
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert h.client.post("/v1/jobs", json=SPEC, headers=bearer(key_b)).status_code == 201  # per tenant
    with h.db.session() as session:
        assert session.query(Job).filter(Job.tenant == "a").count() == 3  # the refused one left no row


def test_queued_and_active_caps(make_api):
    h = make_api(max_queued_per_tenant=2, max_active_per_tenant=3, submit_rate_per_minute=0)
    ids = [h.client.post("/v1/jobs", json=SPEC).get_json()["id"] for _ in range(2)]
    response = h.client.post("/v1/jobs", json=SPEC)
    assert response.status_code == 429 and response.get_json()["error"]["code"] == "too_many_queued"
    assert response.headers["Retry-After"]
    lifecycle.claim(h.db, ids[0], "w", 60)  # one starts running: one queued slot frees up
    assert h.client.post("/v1/jobs", json=SPEC).status_code == 201
    lifecycle.claim(h.db, ids[1], "w", 60)
    response = h.client.post("/v1/jobs", json=SPEC)  # 2 running + 1 queued = 3 active
    assert response.status_code == 429 and response.get_json()["error"]["code"] == "too_many_active"
    assert h.client.post(f"/v1/jobs/{ids[0]}/cancel").status_code == 200  # cancellation requested only
    assert h.client.post("/v1/jobs", json=SPEC).status_code == 429


def test_an_oversized_body_is_413(make_api):
    h = make_api(max_body_bytes=2000)
    response = h.client.post("/v1/jobs", data=b'{"name": "' + b"x" * 5000 + b'"}', content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_spec_bounds_come_from_the_settings(make_api):
    h = make_api(max_steps=100, max_batch_size=8)
    response = h.client.post("/v1/jobs", json=SPEC | {"train": {"steps": 101, "batch_size": 8}})
    assert response.status_code == 422 and response.get_json()["error"]["details"][0]["field"] == "train.steps"
    response = h.client.post("/v1/jobs", json=SPEC | {"train": {"steps": 10, "batch_size": 16}})
    assert response.status_code == 422 and response.get_json()["error"]["details"][0]["field"] == "train.batch_size"
