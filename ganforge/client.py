"""A small Python client of the ganforge HTTP API (the CLI uses it)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class APIError(Exception):
    """An error answer from the service: status, code, message and field details."""

    def __init__(self, status: int, body: dict[str, Any] | None, text: str = ""):
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.code = error.get("code", "http_error")
        self.details = error.get("details", [])
        message = error.get("message") or text or f"HTTP {status}"
        super().__init__(message)

    def describe(self) -> str:
        lines = [f"{self.status} {self.code}: {self}"]
        lines += [f"  {d.get('field')}: {d.get('problem')}" for d in self.details]
        return "\n".join(lines)


ARCHIVE_TYPES = {".zip": "application/zip", ".tar": "application/x-tar", ".tar.gz": "application/gzip",
                 ".tgz": "application/gzip"}


def archive_type(path: str) -> str:
    """The Content-Type of an archive upload, from the file's name; ValueError for another kind."""
    for suffix, content_type in ARCHIVE_TYPES.items():
        if path.lower().endswith(suffix):
            return content_type
    raise ValueError(f"{path}: not a .zip, .tar, .tar.gz or .tgz archive")


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30.0):
        self.url = (url or os.environ.get("GANFORGE_URL") or "http://127.0.0.1:8080").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("GANFORGE_API_KEY")
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None, raw: bool = False,
                 headers: dict[str, str] | None = None) -> Any:
        data = None
        all_headers = {"Accept": "application/json", **(headers or {})}
        if body is not None:  # JSON, or bytes / an open file sent as they are (headers name the type)
            data = body if isinstance(body, bytes) or hasattr(body, "read") else json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if self.api_key:
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
                return payload if raw else json.loads(payload or b"null")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            raise APIError(exc.code, parsed, text[:200]) from None

    # ---- jobs --------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._request("POST", "/v1/jobs", spec, headers=headers)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}")

    def jobs(self, status: str | None = None, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        query = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
        return self._request("GET", "/v1/jobs?" + urllib.parse.urlencode(query))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{urllib.parse.quote(job_id)}/cancel")

    def metrics(self, job_id: str, names: list[str] | None = None, since_step: int | None = None) -> dict[str, Any]:
        query = {}
        if names:
            query["names"] = ",".join(names)
        if since_step is not None:
            query["since_step"] = since_step
        return self._request("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}/metrics?" + urllib.parse.urlencode(query))

    def logs(self, job_id: str) -> dict[str, Any]:
        """The job's multi-device attempt logs, each with a download URL."""
        return self._request("GET", f"/v1/jobs/{job_id}/logs")

    def samples(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}/samples")

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}/checkpoints")

    def generate(self, job_id: str, n: int = 64, seed: int = 0, labels: Any = None, checkpoint: int | None = None,
                 fmt: str = "png") -> bytes:
        body = {"n": n, "seed": seed, "labels": labels, "checkpoint": checkpoint, "format": fmt}
        return self._request("POST", f"/v1/jobs/{urllib.parse.quote(job_id)}/generate", body, raw=True)

    def download(self, url: str) -> bytes:
        """GET a presigned (or API-signed) URL as it is."""
        if url.startswith("/"):
            url = self.url + url
        with urllib.request.urlopen(url, timeout=self.timeout) as response:
            return response.read()

    # ---- sweeps ------------------------------------------------------------------------------
    def submit_sweep(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._request("POST", "/v1/sweeps", spec, headers=headers)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/sweeps/{urllib.parse.quote(sweep_id)}")

    def sweeps(self, status: str | None = None, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        query = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
        return self._request("GET", "/v1/sweeps?" + urllib.parse.urlencode(query))

    def sweep_trials(self, sweep_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/sweeps/{urllib.parse.quote(sweep_id)}/trials")

    def sweep_curves(self, sweep_id: str, figure: str | None = None) -> dict[str, Any]:
        query = "?" + urllib.parse.urlencode({"figure": figure}) if figure else ""
        return self._request("GET", f"/v1/sweeps/{urllib.parse.quote(sweep_id)}/curves{query}")

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/sweeps/{urllib.parse.quote(sweep_id)}/cancel")

    # ---- uploaded datasets -------------------------------------------------------------------
    def upload_dataset(self, path: str | os.PathLike[str], name: str | None = None,
                       idempotency_key: str | None = None) -> dict[str, Any]:
        """POST an archive (.zip, .tar, .tar.gz / .tgz) from disk, streamed from the file."""
        content_type = archive_type(str(path))
        query = "?" + urllib.parse.urlencode({"name": name}) if name else ""
        headers = {"Content-Type": content_type, "Content-Length": str(os.path.getsize(path))}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        with open(path, "rb") as body:
            return self._request("POST", "/v1/datasets" + query, body, headers=headers)

    def datasets(self, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        query = {k: v for k, v in {"limit": limit, "cursor": cursor}.items() if v is not None}
        return self._request("GET", "/v1/datasets?" + urllib.parse.urlencode(query))

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/datasets/{urllib.parse.quote(dataset_id)}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{urllib.parse.quote(dataset_id)}")

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        return self._request("GET", "/readyz")
