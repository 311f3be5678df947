"""Property-based fuzzing of the whole HTTP API from its own /openapi.json (schemathesis).

Two tenants (a, b) and an admin each own jobs with metrics, sample grids and a real (tiny)
checkpoint; a and b each own an uploaded dataset. Every generated request — positive (schema-valid) and negative (schema-violating)
data for every operation — is sent as one of: tenant a, tenant b, the admin, no key, a wrong
key. Half of the generated ids are swapped for real job/artifact/dataset ids of either tenant, so
cross-tenant access is actually attempted rather than hitting random ids. Prints:

    total requests, 5xx responses, schema violations (status code, content type or body not as
    /openapi.json says), cross-tenant reads (a 2xx/304 on another tenant's job or artifact, or
    another tenant's job in a list) — the last three must be 0.

    python bench/fuzz.py [--requests 10000] [--seed 0]

The app runs in-process (Flask's test client) on a SQLite file with auth required.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.prerequisites import Needs  # noqa: E402

SPEC: dict[str, Any] = {
    "name": "ring", "dataset": {"name": "ring8"},
    "model": {"latent_dim": 2, "hidden_g": [16, 16], "hidden_d": [16, 16], "g_batchnorm": False},
    "train": {"steps": 3, "batch_size": 16, "seed": 1}, "log_every": 1, "sample_every": 10,
    "checkpoint_every": 3, "eval": {"at_end": False}, "device": "cpu",
}
CALLERS = ("a", "b", "admin", "none", "wrong")


@dataclass
class World:
    app: Any
    client: Any
    keys: dict[str, str]
    job_owner: dict[str, str] = field(default_factory=dict)  # job id -> tenant
    artifact_owner: dict[str, str] = field(default_factory=dict)  # artifact id -> tenant
    dataset_owner: dict[str, str] = field(default_factory=dict)  # uploaded dataset id -> tenant


def _tiny_archive() -> bytes:
    """A zip of one PNG: an upload the API accepts."""
    import io
    import zipfile

    from PIL import Image

    image, archive = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(image, format="PNG")
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("red/0.png", image.getvalue())
    return archive.getvalue()


def build_world(tmp: Path, **setting_changes: Any) -> World:
    """An auth-required app on a fresh SQLite file with two tenants' jobs and artifacts."""
    from sqlalchemy import create_engine

    from ganforge.api import create_app
    from gan_core import checkpoint as ckpt
    from gan_core.spec import JobSpec
    from gan_core.trainer import Trainer
    from ganforge.jobs import lifecycle
    from ganforge.jobs.db import Database
    from ganforge.jobs.keys import create_key
    from ganforge.jobs.models import Base
    from ganforge.jobs.queue import RecordingEnqueuer
    from ganforge.jobs.services import Services
    from ganforge.jobs.settings import Settings
    from ganforge.jobs.storage import LocalStorage

    url = f"sqlite:///{tmp / 'fuzz.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    settings = Settings(data_dir=tmp / "home", database_url=url, broker_url="memory://",
                        storage_url=f"file://{tmp / 'artifacts'}", signing_secret="fuzz-secret", log_json=True,
                        auth="required", auth_cache_seconds=5.0, **setting_changes)
    db = Database(url)
    storage = LocalStorage(tmp / "artifacts")
    app = create_app(services=Services(settings, db, storage, RecordingEnqueuer()))
    keys = {"a": create_key(db, "a")[1], "b": create_key(db, "b")[1], "admin": create_key(db, "ops", is_admin=True)[1]}
    world = World(app, app.test_client(), keys)

    trainer = Trainer(JobSpec.model_validate(SPEC))
    trainer.run()
    checkpoint_bytes = ckpt.to_bytes(trainer.checkpoint())
    generator_bytes = ckpt.to_bytes(trainer.generator_file())
    for tenant in ("a", "b"):
        for status in ("queued", "running", "succeeded"):
            spec = JobSpec.model_validate(SPEC)
            with db.session() as session:
                job_id = lifecycle.submit(session, spec, tenant=tenant).id
            world.job_owner[job_id] = tenant
            if status == "queued":
                continue
            claim = lifecycle.claim(db, job_id, "fuzz-worker", 3600)
            lifecycle.record_metrics(db, job_id, claim.token, [(s, {"loss_d": 0.5 + s, "loss_g": 1.0}) for s in (1, 2, 3)], 3600)
            for kind, step, key, data, ctype in (
                ("sample_grid", 3, f"jobs/{job_id}/samples/3.png", b"\x89PNG\r\n\x1a\nfake", "image/png"),
                ("checkpoint", 3, f"jobs/{job_id}/checkpoints/3.pt", checkpoint_bytes, "application/octet-stream"),
                ("final_model", 3, f"jobs/{job_id}/final/generator.pt", generator_bytes, "application/octet-stream"),
            ):
                stored = storage.put(key, data, ctype)
                artifact = lifecycle.record_artifact(db, job_id, claim.token, kind=kind, step=step, key=stored.key,
                                                     size=stored.size, sha256=stored.sha256, content_type=ctype)
                world.artifact_owner[artifact.id] = tenant
            if status == "succeeded":
                lifecycle.finish(db, job_id, claim.token, "succeeded", "done", step=3)
        uploaded = world.client.post("/v1/datasets", data=_tiny_archive(), content_type="application/zip",
                                     headers={"Authorization": f"Bearer {keys[tenant]}"})
        world.dataset_owner[uploaded.get_json()["id"]] = tenant
    return world


@dataclass
class Tally:
    total: int = 0
    server_errors: int = 0
    violations: int = 0
    cross_tenant_reads: int = 0
    statuses: Counter = field(default_factory=Counter)
    per_operation: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first few failures, for the report

    def note(self, what: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(what)


def _query(params: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Query pairs as a client library would send them (negative data nests lists and objects)."""
    import json

    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool):
                item = "true" if item else "false"
            elif isinstance(item, (dict, list)):
                item = json.dumps(item)
            pairs.append((str(key), "" if item is None else str(item)))
    return pairs


def fuzz(world: World, n_requests: int, seed: int = 0) -> Tally:
    import hypothesis.strategies as st
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

    # The description the app serves (not the module that builds it): the contract clients see.
    schema = schemathesis.openapi.from_dict(world.client.get("/openapi.json").get_json())
    operations = [result.ok() for result in schema.get_all_operations()]
    strategies = [op.as_strategy(mode) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    # Uploads are archives; the generated bodies are bytes sent as they are (mostly refused: 422).
    @schemathesis.serializer("application/zip", "application/x-tar", "application/gzip")
    def archive_body(ctx: Any, value: Any) -> dict[str, Any]:
        return {"data": value if isinstance(value, bytes) else str(value).encode()}

    rng = random.Random(seed)
    jobs, artifacts, uploads = list(world.job_owner), list(world.artifact_owner), list(world.dataset_owner)
    tally = Tally()
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]

    def send(case: Any) -> None:
        caller = rng.choice(CALLERS)
        target_owner = None
        if "job_id" in case.path_parameters and rng.random() < 0.5:
            case.path_parameters["job_id"] = rng.choice(jobs)
            target_owner = world.job_owner[case.path_parameters["job_id"]]
        if "artifact_id" in case.path_parameters and rng.random() < 0.5:
            case.path_parameters["artifact_id"] = rng.choice(artifacts)
            target_owner = world.artifact_owner[case.path_parameters["artifact_id"]]
        if "dataset_id" in case.path_parameters and rng.random() < 0.5:
            case.path_parameters["dataset_id"] = rng.choice(uploads)
            target_owner = world.dataset_owner[case.path_parameters["dataset_id"]]
        headers = {}
        if caller in world.keys:
            headers["Authorization"] = f"Bearer {world.keys[caller]}"
        elif caller == "wrong":
            headers["Authorization"] = "Bearer gf_" + "x" * 43
        kwargs = case.as_transport_kwargs(base_url="http://localhost", headers=headers)
        if caller == "none":
            kwargs["headers"].pop("Authorization", None)
        parts = urlsplit(kwargs["url"])
        body = {"json": kwargs["json"]} if "json" in kwargs else {"data": kwargs.get("data")} if kwargs.get("data") is not None else {}
        response = world.client.open(parts.path, method=kwargs["method"], headers=kwargs["headers"],
                                     query_string=_query(kwargs.get("params")) or parts.query, **body)
        label = case.operation.label
        tally.total += 1
        tally.statuses[response.status_code] += 1
        tally.per_operation[label] += 1
        if response.status_code >= 500:
            tally.server_errors += 1
            tally.note(f"{response.status_code} {label} as {caller}: {response.get_data(as_text=True)[:200]}")
        try:
            case.validate_response(response, checks=checks)
        except (Exception, BaseExceptionGroup) as exc:  # a FailureGroup: every check that failed
            tally.violations += 1
            titles = "; ".join(getattr(f, "title", str(f)) for f in getattr(exc, "exceptions", [exc]))
            tally.note(f"schema violation {label} -> {response.status_code}: {titles[:300]}")
        # Cross-tenant reads: another tenant's object answered with content.
        reader = caller if caller in ("a", "b") else None
        signed = "signature" in (kwargs.get("params") or {})
        if reader and target_owner and target_owner != reader and response.status_code in (200, 201, 204, 304) and not signed:
            tally.cross_tenant_reads += 1
            tally.note(f"cross-tenant {label} as {reader} on {target_owner}'s -> {response.status_code}")
        listed = {"GET /v1/jobs": world.job_owner, "GET /v1/datasets": world.dataset_owner}.get(label)
        if reader and listed is not None and response.status_code == 200:
            leaked = [j["id"] for j in response.get_json()["items"] if listed.get(j["id"], reader) != reader]
            if leaked:
                tally.cross_tenant_reads += 1
                tally.note(f"cross-tenant list as {reader}: {leaked[:3]}")

    @settings(max_examples=n_requests, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[__import__("hypothesis").Phase.generate])
    @given(st.sampled_from(strategies).flatmap(lambda s: s))
    def run(case: Any) -> None:
        send(case)

    run()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    Needs("bench/fuzz.py").python("flask", "sqlalchemy", "torch").python("schemathesis", how="pip install -e .[test]").check()
    import logging

    logging.disable(logging.CRITICAL)  # one access line per request would drown the figures
    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(Path(tmp))
        started = time.perf_counter()
        tally = fuzz(world, args.requests, args.seed)
        elapsed = time.perf_counter() - started
    print(f"total requests:      {tally.total}  ({elapsed:.0f} s, {len(tally.per_operation)} operations)")
    print(f"5xx responses:       {tally.server_errors}")
    print(f"schema violations:   {tally.violations}")
    print(f"cross-tenant reads:  {tally.cross_tenant_reads}")
    print("per operation:       " + ", ".join(f"{k} {v}" for k, v in sorted(tally.per_operation.items())))
    print("statuses:            " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.statuses.items())))
    for line in tally.examples:
        print("  " + line)
    return 0 if tally.server_errors == tally.violations == tally.cross_tenant_reads == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
