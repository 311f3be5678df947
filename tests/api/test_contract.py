"""The API contract: /openapi.json is OpenAPI 3.1 built from the pydantic models, /docs renders
it offline, schemathesis fuzzes every operation against it, and any JSON sent as a job spec is
either a valid spec or a 422 naming a field (hypothesis)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ganforge.api.openapi import build_spec
from ganforge.api.schemas import GenerateRequest
from gan_core.spec import JobSpec, error_details

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = 28  # 20 + the four of /v1/datasets + a sweep's curves + PATCH a job + a job's bundle + /metrics


def test_openapi_is_valid_3_1_and_comes_from_the_models(api):
    from openapi_spec_validator import validate

    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on an invalid description
    schemas = doc["components"]["schemas"]
    # The request bodies are the models the views validate with, field for field.
    assert set(schemas["JobSpec"]["properties"]) == set(JobSpec.model_fields)
    assert schemas["JobSpec"]["additionalProperties"] is False
    assert set(schemas["GenerateRequest"]["properties"]) == set(GenerateRequest.model_fields)
    # The submit body: a JobSpec and the job's labels, side by side.
    assert doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobSubmission"}
    assert set(schemas["JobSubmission"]["properties"]) == set(JobSpec.model_fields) | {"tags", "notes", "notify"}
    assert schemas["JobSubmission"]["additionalProperties"] is False
    assert set(schemas["JobPatch"]["properties"]) == {"tags", "notes"}
    # Every route of the app is described, and nothing else.
    routes = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule) for rule in api.app.url_map.iter_rules()
              if not rule.endpoint.startswith("openapi.") and rule.endpoint != "static"
              and not rule.endpoint.startswith("dashboard.")}  # HTML pages, not API operations
    assert routes == set(doc["paths"])
    assert sum(len(methods) for methods in doc["paths"].values()) == OPERATIONS


def test_plain_docs_page_renders_every_operation_offline(api):
    response = api.client.get("/docs/plain")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for path in build_spec()["paths"]:
        assert f"<code>{path}</code>" in page
    assert "id='schema-JobSpec'" in page
    # Nothing fetched from elsewhere: no scripts or images; the one style sheet is the app's own file.
    assert not re.search(r"<(script|img)\b", page)
    assert re.findall(r"<link\b[^>]*>", page) == ["<link rel='stylesheet' href='/static/docs.css'>"]
    assert api.client.get("/static/docs.css").status_code == 200
    # (Descriptions may quote example URLs as text; nothing links or loads from another origin.)
    assert not re.search(r"""(?:src|href)=['"]?(?:https?:)?//""", page)


def test_docs_is_swagger_ui_served_by_the_app_itself(api):
    page = api.client.get("/docs").get_data(as_text=True)
    sources = re.findall(r"(?:src|href)='([^']+)'", page)
    assert "/docs/assets/swagger-ui-bundle.js" in sources and "/static/docs-init.js" in sources
    assert all(src.startswith("/") for src in sources)  # no CDN
    for src in sources:
        if src.startswith(("/docs/assets/", "/static/")):
            assert api.client.get(src).status_code == 200, src
    assert "SwaggerUIBundle" in api.client.get("/static/docs-init.js").get_data(as_text=True)
    # Only the viewer's two files are served from the package folder.
    assert api.client.get("/docs/assets/LICENSE").status_code == 404
    assert api.client.get("/docs/assets/..%2F__init__.py").status_code == 404


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("ganforge_bench_fuzz", ROOT / "bench" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_schemathesis_over_every_operation_two_tenants(tmp_path):
    """A bounded run of bench/fuzz.py (which runs 10 000 requests): positive and negative data
    for every operation, as tenant a, tenant b, admin, no key and a wrong key."""
    fuzz = _fuzz_module()
    world = fuzz.build_world(tmp_path)
    tally = fuzz.fuzz(world, 700, seed=1)
    assert tally.total == 700
    assert len(tally.per_operation) == OPERATIONS, tally.per_operation
    assert (tally.server_errors, tally.violations, tally.cross_tenant_reads) == (0, 0, 0), tally.examples
    # The run reached the interesting answers, not only 401s and 404s.
    assert {200, 401, 404, 422} <= set(tally.statuses), tally.statuses


# ---- any JSON as a job spec ------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
VALID: dict[str, Any] = {
    "name": "ring", "dataset": {"name": "ring8"},
    "model": {"latent_dim": 2, "hidden_g": [16, 16], "hidden_d": [16, 16], "g_batchnorm": False},
    "train": {"steps": 3, "batch_size": 16, "seed": 1}, "device": "cpu",
}
KEYS = st.sampled_from(["name", "dataset", "model", "train", "loss", "eval", "device", "log_every", "path", "name",
                        "steps", "batch_size", "arch", "latent_dim", "image_size", "conditioning", "limit"])


@st.composite
def mutated_specs(draw) -> Any:
    """A valid spec with a few values replaced, added or removed somewhere inside: deep errors
    that random JSON alone would rarely reach."""
    doc = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        target = doc
        path = draw(st.lists(st.sampled_from(["dataset", "model", "train"]), max_size=1))
        for key in path:
            target = target.setdefault(key, {}) if isinstance(target.get(key), dict) else target
        key = draw(KEYS)
        if draw(st.booleans()):
            target[key] = draw(JSON)
        else:
            target.pop(key, None)
    return doc


ANY_SPEC = st.one_of(JSON, st.dictionaries(KEYS, JSON, max_size=6), mutated_specs())


@settings(max_examples=400, deadline=None)
@given(ANY_SPEC)
def test_any_json_is_a_valid_spec_or_errors_that_name_fields(doc):
    try:
        spec = JobSpec.model_validate(doc)
    except ValidationError as exc:
        details = error_details(exc)
        assert details and all(d["field"] and d["problem"] for d in details)
    else:
        assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec  # round-trips


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=ANY_SPEC)
def test_any_json_posted_as_a_spec_is_201_or_a_422_naming_a_field(make_api, doc):
    h = _unlimited(make_api)
    limits = h.services.settings.spec_limits
    response = h.client.post("/v1/jobs", data=json.dumps(doc), content_type="application/json")
    if response.status_code == 201:
        JobSpec.model_validate(doc, context=limits)  # the API accepted exactly what the model accepts
    else:
        assert response.status_code == 422, response.get_data(as_text=True)
        details = response.get_json()["error"]["details"]
        assert details and all(d["field"] and d["problem"] for d in details)
        assert not isinstance(doc, dict) or _model_refuses(doc, limits)  # refused only what the model refuses


_APPS: dict[int, Any] = {}


def _unlimited(make_api):
    # One app per fixture instance (hypothesis calls the test body many times with one fixture).
    key = id(make_api)
    if key not in _APPS:
        _APPS.clear()
        _APPS[key] = make_api(submit_rate_per_minute=0, max_queued_per_tenant=10**9, max_active_per_tenant=10**9)
    return _APPS[key]


def _model_refuses(doc: dict, limits: dict[str, int]) -> bool:
    try:
        JobSpec.model_validate(doc, context=limits)
    except ValidationError:
        return True
    return False

