"""The API's OpenAPI 3.1 description, assembled from the pydantic models the views validate
with (``JobSpec``, ``GenerateRequest``) and answer with (``ganforge.api.schemas``): no schema here is
written by hand. Served at ``/openapi.json``; ``/docs`` shows it in Swagger UI, whose files come
from the flask-swagger-ui package and are served by this app (no CDN: it works offline and under
the pages' strict Content-Security-Policy); ``/docs/plain`` renders it as one HTML page on the
server for readers without JavaScript.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import Blueprint, Response, abort, jsonify, send_from_directory
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ganforge.api import datasets as ds
from ganforge.api import schemas as s
from ganforge.api import sweeps as sw
from gan_core.spec import JobSpec
from ganforge.jobs.sweep_spec import SweepSpec

bp = Blueprint("openapi", __name__)

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "malformed request (not JSON, empty body)",
    401: "missing, unknown or revoked API key",
    403: "the signed URL is wrong or has expired",
    404: "no such job or artifact (another tenant's is not found either)",
    409: "the job's state does not allow this",
    413: "the request body is over the size limit",
    415: "the body is not application/json",
    422: "a field or query parameter is invalid (or unknown); details name it",
    429: "a per-tenant limit was reached; Retry-After says when to try again",
    503: "a dependency (database, store, generation capacity) is unavailable; retry",
}
ID_PATTERN = r"^[0-9a-f]{32}$"
RATE_HEADERS = {
    "X-RateLimit-Limit": {"description": "submissions allowed per window (absent when unlimited)",
                          "schema": {"type": "string"}},
    "X-RateLimit-Window": {"description": "the window, in seconds", "schema": {"type": "string"}},
    "X-RateLimit-Remaining": {"description": "submissions left in the window", "schema": {"type": "string"}},
}


# Operations are grouped by the first segment after /v1 (probes: "service").
TAGS = [
    {"name": "jobs", "description": "Training jobs: submit, read, cancel, metrics, artifacts, sampling"},
    {"name": "sweeps", "description": "Searches over job specs whose trials are jobs"},
    {"name": "artifacts", "description": "Stored bytes, by signed URL or with an API key"},
    {"name": "presets", "description": "Ready-made job specs"},
    {"name": "service", "description": "Liveness and readiness probes"},
]
REQUEST_ID = {"name": "X-Request-ID", "in": "header", "required": False,
              "description": "echoed back; a sane caller-chosen id (1-64 of [A-Za-z0-9._:-]) is kept, else one is made",
              "schema": {"type": "string", "maxLength": 64}}
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "description": "a retried POST with the same key and body returns what the first one made "
                                  "(with Idempotent-Replayed: true); the same key with another body is a 409",
                   "schema": {"type": "string", "minLength": 1, "maxLength": 255}}
RESPONSE_HEADERS = {"X-Request-ID": {"description": "the request's id, also in the server's log lines",
                                     "schema": {"type": "string"}}}
REPLAYED_HEADER = {"Idempotent-Replayed": {"description": "`true` when this answer replays an earlier request "
                                                         "with the same Idempotency-Key", "schema": {"type": "string"}}}


def _tag(path: str) -> str:
    parts = path.strip("/").split("/")
    return parts[1] if parts[0] == "v1" else "service"


def _json(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One OpenAPI query parameter per field of ``model``, with that field's JSON Schema."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def _id_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}


@lru_cache(maxsize=1)
def build_spec() -> dict[str, Any]:
    inputs = [JobSpec, s.JobSubmission, s.JobPatch, s.GenerateRequest, s.InterpolateRequest, SweepSpec]
    outputs = [s.JobOut, s.JobPage, s.MetricsOut, s.ArtifactList, s.JobLogs, s.CheckpointList, s.ErrorEnvelope, s.Health,
               s.Readiness, s.PresetList, sw.SweepOut, sw.SweepPage, sw.TrialList, sw.CurvesOut,
               ds.DatasetOut, ds.DatasetPage]
    refs, definitions = models_json_schema(
        [(m, "validation") for m in inputs] + [(m, "serialization") for m in outputs], ref_template=REF
    )

    def ref(model: type[BaseModel], mode: str = "serialization") -> dict[str, Any]:
        return refs[(model, mode)]

    def errors(*codes: int) -> dict[str, Any]:
        out = {str(c): {"description": ERROR_TEXT[c], "content": _json(ref(s.ErrorEnvelope))} for c in codes}
        for code in {"429", "503"} & set(out):
            out[code]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
        return out

    def op(summary: str, ok: dict[str, Any], errs: tuple[int, ...], *, body: type[BaseModel] | None = None,
           params: list[dict[str, Any]] | None = None, public: bool = False, op_id: str) -> dict[str, Any]:
        responses = {**ok, **errors(*errs)}
        for response in responses.values():
            response["headers"] = {**response.get("headers", {}), **RESPONSE_HEADERS}
        operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses,
                                     "parameters": [*(params or ()), REQUEST_ID]}
        if body is not None:
            operation["requestBody"] = {"required": True, "content": _json(ref(body, "validation"))}
        if public:
            operation["security"] = []
        return operation

    auth_errs = (401,)
    job = [_id_param("job_id")]
    # format: binary beside contentMediaType: generators (openapi-python-client) map it to a file type.
    binary = {"schema": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}}
    paths = {
        "/v1/jobs": {
            "post": op("Submit a training job", {"201": {"description": "queued", "content": _json(ref(s.JobOut)),
                                                        "headers": {"Location": {"schema": {"type": "string"}},
                                                                    **RATE_HEADERS}}},
                       (400, *auth_errs, 413, 415, 422, 429), body=s.JobSubmission, op_id="submitJob"),
            "get": op("List jobs, newest first", {"200": {"description": "a page", "content": _json(ref(s.JobPage))}},
                      (*auth_errs, 422), params=_query_parameters(s.ListJobsQuery), op_id="listJobs"),
        },
        "/v1/jobs/{job_id}": {
            "get": op("Read a job (spec, progress, history)", {"200": {"description": "the job", "content": _json(ref(s.JobOut))}},
                      (*auth_errs, 404), params=job, op_id="getJob"),
            "patch": op("Change a job's tags and notes (nothing else of a job changes)",
                        {"200": {"description": "the job", "content": _json(ref(s.JobOut))}},
                        (400, *auth_errs, 404, 413, 415, 422), body=s.JobPatch, params=job, op_id="updateJob"),
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": op("Cancel a job", {"200": {"description": "cancelled, or cancellation requested",
                                                "content": _json(ref(s.JobOut))}},
                       (*auth_errs, 404, 409), params=job, op_id="cancelJob"),
        },
        "/v1/jobs/{job_id}/metrics": {
            "get": op("Metric series by name", {"200": {"description": "series", "content": _json(ref(s.MetricsOut))}},
                      (*auth_errs, 404, 422), params=job + _query_parameters(s.MetricsQuery), op_id="jobMetrics"),
        },
        "/v1/jobs/{job_id}/samples": {
            "get": op("Sample grids with presigned URLs", {"200": {"description": "grids by step",
                                                                  "content": _json(ref(s.ArtifactList))}},
                      (*auth_errs, 404, 422, 503), params=job, op_id="jobSamples"),
        },
        "/v1/jobs/{job_id}/checkpoints": {
            "get": op("Checkpoints and the final generator with presigned URLs",
                      {"200": {"description": "checkpoints by step", "content": _json(ref(s.CheckpointList))}},
                      (*auth_errs, 404, 422, 503), params=job, op_id="jobCheckpoints"),
        },
        "/v1/jobs/{job_id}/logs": {
            "get": op("The job's log lines from ?since= on (the worker's and each rank's), and each multi-device "
                      "attempt's launcher log with a presigned URL",
                      {"200": {"description": "log lines and attempt logs", "content": _json(ref(s.JobLogs))}},
                      (*auth_errs, 404, 422, 503), params=job + _query_parameters(s.LogsQuery), op_id="jobLogs"),
        },
        "/v1/jobs/{job_id}/bundle": {
            "get": op("The whole job as one zip (streamed): job.json, spec.json, metrics.csv and .jsonl, sample "
                      "grids, the final generator, evaluation reports",
                      {"200": {"description": "a zip archive", "content": {"application/zip": binary}}},
                      (*auth_errs, 404, 422), params=job, op_id="jobBundle"),
        },
        "/v1/jobs/{job_id}/generate": {
            "post": op("Generate samples from a checkpoint",
                       {"200": {"description": "a PNG grid or a .npy float32 array",
                                "content": {"image/png": binary, "application/octet-stream": binary}}},
                       (400, *auth_errs, 404, 409, 413, 415, 422, 503), body=s.GenerateRequest, params=job,
                       op_id="generateSamples"),
        },
        "/v1/jobs/{job_id}/samples.gif": {
            "get": op("The sample-grid timeline as an animated GIF",
                      {"200": {"description": "an animated GIF", "content": {"image/gif": binary}},
                       "304": {"description": "not modified (If-None-Match)"}},
                      (*auth_errs, 404, 409, 422, 503), params=job + _query_parameters(s.TimelineQuery),
                      op_id="samplesTimeline"),
        },
        "/v1/jobs/{job_id}/interpolate": {
            "post": op("A latent interpolation strip between two seeds",
                       {"200": {"description": "a PNG strip", "content": {"image/png": binary}}},
                       (400, *auth_errs, 404, 409, 413, 415, 422, 503), body=s.InterpolateRequest, params=job,
                       op_id="interpolateSamples"),
        },
        "/v1/sweeps": {
            "post": op("Submit a sweep (a search over job specs; its trials are jobs)",
                       {"201": {"description": "accepted; the first trials are queued", "content": _json(ref(sw.SweepOut)),
                                "headers": {"Location": {"schema": {"type": "string"}}, **RATE_HEADERS}}},
                       (400, *auth_errs, 409, 413, 415, 422, 429), body=SweepSpec, op_id="submitSweep"),
            "get": op("List sweeps, newest first", {"200": {"description": "a page", "content": _json(ref(sw.SweepPage))}},
                      (*auth_errs, 422), params=_query_parameters(sw.ListSweepsQuery), op_id="listSweeps"),
        },
        "/v1/sweeps/{sweep_id}": {
            "get": op("Read a sweep (status, trial counts, best trial)",
                      {"200": {"description": "the sweep", "content": _json(ref(sw.SweepOut))}},
                      (*auth_errs, 404), params=[_id_param("sweep_id")], op_id="getSweep"),
        },
        "/v1/sweeps/{sweep_id}/trials": {
            "get": op("A sweep's trials in order", {"200": {"description": "the trials", "content": _json(ref(sw.TrialList))}},
                      (*auth_errs, 404, 422), params=[_id_param("sweep_id")], op_id="sweepTrials"),
        },
        "/v1/sweeps/{sweep_id}/curves": {
            "get": op("Every trial's learning curve (the eval/<figure> series of its periodic evaluations)",
                      {"200": {"description": "the curves", "content": _json(ref(sw.CurvesOut))}},
                      (*auth_errs, 404, 422), params=[_id_param("sweep_id"), *_query_parameters(sw.CurvesQuery)],
                      op_id="sweepCurves"),
        },
        "/v1/sweeps/{sweep_id}/cancel": {
            "post": op("Cancel a sweep and its queued and running trials",
                       {"200": {"description": "cancelled", "content": _json(ref(sw.SweepOut))}},
                       (*auth_errs, 404, 409), params=[_id_param("sweep_id")], op_id="cancelSweep"),
        },
        "/v1/datasets": {
            "post": {**op("Upload an archive of images (zip, tar or gzip tar) to train on as dataset.upload_id",
                          {"201": {"description": "checked and stored", "content": _json(ref(ds.DatasetOut)),
                                   "headers": {"Location": {"schema": {"type": "string"}}}}},
                          (400, *auth_errs, 409, 413, 415, 422, 503), params=_query_parameters(ds.UploadQuery),
                          op_id="uploadDataset"),
                     "requestBody": {"required": True, "content": {
                         media: {"schema": {"type": "string", "format": "binary", "contentMediaType": media}}
                         # octet-stream: the format is read from the archive's first bytes
                         for media in ("application/zip", "application/x-tar", "application/gzip",
                                       "application/octet-stream")}}},
            "get": op("List uploaded datasets, newest first",
                      {"200": {"description": "a page", "content": _json(ref(ds.DatasetPage))}},
                      (*auth_errs, 422), params=_query_parameters(ds.ListDatasetsQuery), op_id="listDatasets"),
        },
        "/v1/datasets/{dataset_id}": {
            "get": op("Read an uploaded dataset (files, images, skipped, classes, bytes)",
                      {"200": {"description": "the dataset", "content": _json(ref(ds.DatasetOut))}},
                      (*auth_errs, 404), params=[_id_param("dataset_id")], op_id="getDataset"),
            "delete": op("Delete an uploaded dataset and its archive",
                         {"204": {"description": "deleted"}},
                         (*auth_errs, 404, 409), params=[_id_param("dataset_id")], op_id="deleteDataset"),
        },
        "/v1/presets": {
            "get": op("Ready-made job specs", {"200": {"description": "the presets",
                                                      "content": _json(ref(s.PresetList))}},
                      (*auth_errs, 422), op_id="listPresets"),
        },
        "/v1/artifacts/{artifact_id}/content": {
            "get": op("An artifact's bytes (signed URL from a listing, or with an API key)",
                      {"200": {"description": "the stored bytes",
                               "content": {"image/png": binary, "application/octet-stream": binary,
                                           "application/json": {"schema": {}}}},
                       "304": {"description": "not modified (If-None-Match)"}},
                      (*auth_errs, 403, 404, 503),
                      params=[_id_param("artifact_id"),
                              {"name": "expires", "in": "query", "required": False, "schema": {"type": "string"}},
                              {"name": "signature", "in": "query", "required": False, "schema": {"type": "string"}}],
                      op_id="artifactContent"),
        },
        "/healthz": {"get": op("Liveness", {"200": {"description": "alive", "content": _json(ref(s.Health))}}, (),
                               public=True, op_id="healthz")},
        "/metrics": {"get": op("Prometheus metrics (text format): requests by route and status with latency "
                               "histograms, jobs by state, queue depth per queue; an admin key when keys are required",
                               {"200": {"description": "the metrics", "content": {
                                   "text/plain": {"schema": {"type": "string"}}}}},
                               (*auth_errs, 403), op_id="metrics")},
        "/readyz": {"get": op("Readiness (database, broker, store)",
                              {"200": {"description": "ready", "content": _json(ref(s.Readiness))},
                               "503": {"description": "not ready", "content": _json(ref(s.Readiness))}}, (),
                              public=True, op_id="readyz")},
    }
    for path, methods in paths.items():
        for method, operation in methods.items():
            operation["tags"] = [_tag(path)]
            if method == "post" and path in ("/v1/jobs", "/v1/sweeps"):
                operation["parameters"].insert(0, IDEMPOTENCY_KEY)
                for status in ("200", "201"):
                    if status in operation["responses"]:
                        operation["responses"][status]["headers"].update(REPLAYED_HEADER)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ganforge", "version": "1",
                 "description": "GAN training jobs over HTTP. Send `Authorization: Bearer <key>` (keys come from "
                                "`ganforge keys create`); an embedded deployment without keys ignores it."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        # Relative: the document describes whichever server answered it (embedded, compose, behind a proxy).
        "servers": [{"url": "/", "description": "the server that served this document"}],
        "tags": TAGS,
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/openapi.json")
def spec():
    return jsonify(build_spec())


# ---- /docs: the description as one plain HTML page ---------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value))


def _schema_name(schema: dict[str, Any]) -> str:
    target = schema.get("$ref", "")
    if target:
        name = target.rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    return f"<code>{_e(json.dumps(schema))}</code>"


def render_docs(doc: dict[str, Any]) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(doc['info']['title'])} API</title>",
           # A file, not an inline <style>: the pages' Content-Security-Policy allows only the app's own files.
           "<link rel='stylesheet' href='/static/docs.css'></head><body>",
           f"<h1>{_e(doc['info']['title'])} API</h1><p>{_e(doc['info']['description'])}</p>",
           "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1).</p><h2>Operations</h2>"]
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            out.append(f"<h3 id='{_e(operation['operationId'])}'><span class='m'>{_e(method)}</span> "
                       f"<code>{_e(path)}</code></h3><p>{_e(operation['summary'])}"
                       + (" — <em>no key needed</em>" if operation.get("security") == [] else "") + "</p>")
            params = operation.get("parameters", [])
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th><th>description</th></tr>")
                for p in params:
                    out.append(f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td><td>{'yes' if p['required'] else 'no'}"
                               f"</td><td>{_schema_name(p['schema'])}</td><td>{_e(p.get('description', ''))}</td></tr>")
                out.append("</table>")
            if "requestBody" in operation:
                content = operation["requestBody"]["content"]
                body = (_schema_name(content["application/json"]["schema"]) if "application/json" in content
                        else " or ".join(f"<code>{_e(media)}</code>" for media in content))
                out.append(f"<p>Body: {body}</p>")
            out.append("<ul>")
            for status, response in operation["responses"].items():
                kinds = ", ".join(_schema_name(c["schema"]) if "$ref" in c.get("schema", {}) else _e(t)
                                  for t, c in response.get("content", {}).items())
                out.append(f"<li><b>{_e(status)}</b> {_e(response['description'])}{': ' + kinds if kinds else ''}</li>")
            out.append("</ul>")
    out.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        out.append(f"<h3 id='schema-{_e(name)}'>{_e(name)}</h3><pre>{_e(json.dumps(schema, indent=2))}</pre>")
    out.append("</body></html>")
    return "".join(out)


@lru_cache(maxsize=1)
def _docs_html() -> str:
    return render_docs(build_spec())


@bp.get("/docs/plain")
def docs_plain():
    return Response(_docs_html(), mimetype="text/html")


# ---- /docs: Swagger UI ----------------------------------------------------------------------------
SWAGGER_UI_DIST = Path(flask_swagger_ui.__file__).parent / "dist"
SWAGGER_UI_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js"})
SWAGGER_PAGE = ("<!doctype html><html><head><meta charset='utf-8'><title>ganforge API</title>"
                "<link rel='stylesheet' href='/docs/assets/swagger-ui.css'></head><body>"
                "<noscript><p>This viewer needs JavaScript: read <a href='/docs/plain'>the plain page</a> "
                "or <a href='/openapi.json'>/openapi.json</a>.</p></noscript>"
                "<div id='swagger-ui'></div>"
                # Files, not inline code: the page's Content-Security-Policy runs only the app's own files.
                "<script src='/docs/assets/swagger-ui-bundle.js'></script>"
                "<script src='/static/docs-init.js'></script></body></html>")


@bp.get("/docs")
def docs():
    return Response(SWAGGER_PAGE, mimetype="text/html")


@bp.get("/docs/assets/<name>")
def docs_asset(name: str):
    if name not in SWAGGER_UI_FILES:
        abort(404)
    return send_from_directory(SWAGGER_UI_DIST, name, max_age=86400)
