"""The Python client of the ganforge HTTP API (the CLI uses it too).

    from ganforge.client import Client

    with Client("http://127.0.0.1:8080") as gf:          # or $GANFORGE_URL, $GANFORGE_API_KEY
        job = gf.submit("ring8", tags=["demo"])           # a preset's name, a spec file or a dict
        job = gf.wait(job, timeout=600, progress=True)
        print(job.status, job.evaluation)
        gf.download_samples(job, "grids/")
        gf.download_generator(job, "generator.pt")
        for earlier in gf.jobs(tag="demo"):               # every page, newest first
            print(earlier.id, earlier.name, earlier.status)

Answers are the API's own pydantic models (``ganforge.responses``: ``JobOut``, ``JobSummary``,
``ArtifactList``, …; they also read like the JSON, ``job["status"]``). One ``requests`` session
carries every call (connections are reused); 429 and 503 answers are retried after their
``Retry-After`` by urllib3's ``Retry``. Errors are this module's exceptions, all
``GanforgeError``: ``APIError`` (with ``NotFound`` and ``RateLimited``) for an error answer,
``ConnectionFailed`` naming the URL when the service cannot be reached, ``WaitTimeout``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import requests
from pydantic import BaseModel
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ganforge.responses import (ArtifactList, CheckpointList, JobOut, JobPage, JobSummary, MetricsOut, PresetList,
                                SweepOut, SweepPage, TrialList)

__all__ = ["Client", "GanforgeError", "APIError", "NotFound", "RateLimited", "ConnectionFailed", "WaitTimeout",
           "ChecksumMismatch", "jsonable", "TERMINAL"]

TERMINAL = ("succeeded", "failed", "cancelled")
DEFAULT_URL = "http://127.0.0.1:8080"
M = TypeVar("M", bound=BaseModel)


ARCHIVE_TYPES = {".zip": "application/zip", ".tar": "application/x-tar", ".tar.gz": "application/gzip",
                 ".tgz": "application/gzip"}


def archive_type(path: str) -> str:
    """The Content-Type of an archive upload, from the file's name; ValueError for another kind."""
    for suffix, content_type in ARCHIVE_TYPES.items():
        if path.lower().endswith(suffix):
            return content_type
    raise ValueError(f"{path}: not a .zip, .tar, .tar.gz or .tgz archive")


# ---- errors ---------------------------------------------------------------------------------------
class GanforgeError(Exception):
    """Every error this client raises."""


class APIError(GanforgeError):
    """An error answer from the service: status, code, message and field details."""

    def __init__(self, status: int, body: dict[str, Any] | None, text: str = "", headers: Mapping[str, str] | None = None):
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        error = error if isinstance(error, dict) else {}
        self.status = status
        self.code = error.get("code", "http_error")
        self.details = error.get("details", [])
        self.request_id = error.get("request_id")
        self.headers = dict(headers or {})
        message = error.get("message") or text or f"HTTP {status}"
        super().__init__(message)

    def describe(self) -> str:
        lines = [f"{self.status} {self.code}: {self}"]
        lines += [f"  {d.get('field')}: {d.get('problem')}" for d in self.details]
        return "\n".join(lines)


class NotFound(APIError):
    """404: no such job or artifact (another tenant's is not found either)."""


class RateLimited(APIError):
    """429 after the client's retries: a per-tenant limit; ``retry_after`` seconds (or None)."""

    @property
    def retry_after(self) -> float | None:
        try:
            return float(self.headers.get("Retry-After", ""))
        except ValueError:
            return None


class ConnectionFailed(GanforgeError, ConnectionError):
    """The service could not be reached (refused, unresolvable, timed out): ``url`` is the one tried.
    Also a ConnectionError (an OSError), as urllib's errors were."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the ganforge service at {url}: {reason} "
                         "(is it running? `ganforge up` starts one on this machine)")


class WaitTimeout(GanforgeError, TimeoutError):
    """``wait`` ran out of time; ``job`` is the last view read (still queued or running)."""

    def __init__(self, job: JobOut, timeout: float):
        self.job = job
        super().__init__(f"job {job.id} is still {job.status} after {timeout:g} s "
                         f"(step {job.progress.step}/{job.progress.total}); it keeps running")


class ChecksumMismatch(GanforgeError):
    """A download's bytes do not have the sha256 its listing gave (the partial file is removed)."""


def _error_for(response: requests.Response) -> APIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    kind = {404: NotFound, 429: RateLimited}.get(response.status_code, APIError)
    return kind(response.status_code, body, response.text[:200], response.headers)


def jsonable(value: Any) -> Any:
    """``json.dumps(..., default=jsonable)``: the client's models as their JSON documents."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---- retries --------------------------------------------------------------------------------------
class _Retry(Retry):
    """urllib3's Retry with the wait a Retry-After asks for capped (a rate limit's window can be
    a minute: a script should rather get RateLimited and decide)."""

    max_retry_after = 30.0

    def get_retry_after(self, response) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, self.max_retry_after)


def _retry(retries: int, max_retry_after: float) -> Retry:
    capped = type("CappedRetry", (_Retry,), {"max_retry_after": max_retry_after})
    return capped(
        # Only answers that say "not done, try later": never a resend after the server may have
        # acted on the request, and no reconnecting to a service that is down (fail fast, say so).
        total=retries, connect=0, read=0, other=0,
        status=retries, status_forcelist=(429, 503),
        allowed_methods=None,  # POSTs too: a 429/503 did nothing (and submit sends an Idempotency-Key)
        backoff_factor=0.5, respect_retry_after_header=True, raise_on_status=False,
    )


# ---- pages ----------------------------------------------------------------------------------------
class Pages(Generic[M]):
    """The items of every page of a list, fetched a page at a time as they are consumed. The first
    page is read at once (so a bad filter or a missing key fails at the call)."""

    def __init__(self, fetch: Callable[[str | None], Any], cursor: str | None = None):
        self._fetch = fetch
        self._page = fetch(cursor)

    def __iter__(self) -> Iterator[M]:
        page = self._page
        while True:
            yield from page.items
            if not page.next_cursor:
                return
            page = self._fetch(page.next_cursor)


# ---- the client -----------------------------------------------------------------------------------
class Client:
    """A client of one ganforge service. ``url`` defaults to $GANFORGE_URL (else the embedded
    service's http://127.0.0.1:8080), ``api_key`` to $GANFORGE_API_KEY; ``retries`` for 429/503
    answers, each after its Retry-After (at most ``max_retry_after`` seconds)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 retries: int = 3, max_retry_after: float = 30.0):
        self.url = (url or os.environ.get("GANFORGE_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("GANFORGE_API_KEY")
        self.timeout = timeout
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=_retry(retries, max_retry_after))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Accept"] = "application/json"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # ---- transport --------------------------------------------------------------------------
    def _own(self, url: str) -> bool:
        """Whether ``url`` is on this service (scheme, host and port): the API key goes there and
        nowhere else (an S3 presigned URL refuses a second credential, and must not get it)."""
        mine, theirs = urlsplit(self.url), urlsplit(url)
        return (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)

    def _send(self, method: str, path_or_url: str, *, json_body: Any = None, params: Any = None,
              headers: Mapping[str, str] | None = None, stream: bool = False, data: Any = None) -> requests.Response:
        url = path_or_url if "://" in path_or_url else urljoin(self.url + "/", path_or_url.lstrip("/"))
        all_headers = dict(headers or {})
        if self.api_key and self._own(url):
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            response = self.session.request(method, url, json=json_body, params=params, headers=all_headers,
                                            timeout=self.timeout, stream=stream, data=data)
        except requests.exceptions.Timeout as exc:
            raise ConnectionFailed(url, f"no answer within {self.timeout:g} s ({type(exc).__name__})") from None
        except requests.exceptions.ConnectionError as exc:
            raise ConnectionFailed(url, _reason(exc)) from None
        if response.status_code >= 400:
            try:
                raise _error_for(response)
            finally:
                response.close()
        return response

    def _get(self, model: type[M], path: str, params: Any = None) -> M:
        return _parse(model, self._send("GET", path, params=params))

    @staticmethod
    def _id(job: str | BaseModel) -> str:
        return quote(job if isinstance(job, str) else job.id, safe="")

    # ---- jobs -------------------------------------------------------------------------------
    def submit(self, spec: Mapping[str, Any] | BaseModel | str | os.PathLike, *, name: str | None = None,
               tags: list[str] | None = None, notes: str | None = None,
               idempotency_key: str | None = None) -> JobOut:
        """Submit a job: ``spec`` is a spec document (a dict or a ``JobSpec``), the path of a JSON
        spec file, or the name of one of the service's presets. ``name``, ``tags`` and ``notes``
        override the document's. The submit carries an Idempotency-Key (a fresh one unless given),
        so the retries of a 429 or 503 can never make two jobs."""
        doc = self._spec_document(spec)
        for key, value in (("name", name), ("tags", tags), ("notes", notes)):
            if value is not None:
                doc[key] = value
        key = idempotency_key or uuid.uuid4().hex
        return _parse(JobOut, self._send("POST", "/v1/jobs", json_body=doc, headers={"Idempotency-Key": key}))

    def _spec_document(self, spec: Mapping[str, Any] | BaseModel | str | os.PathLike) -> dict[str, Any]:
        if isinstance(spec, BaseModel):
            return spec.model_dump(mode="json")
        if isinstance(spec, Mapping):
            return json.loads(json.dumps(spec))  # a copy: the overrides must not touch the caller's
        path = Path(spec)
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        if isinstance(spec, os.PathLike) or path.suffix == ".json" or os.sep in str(spec):
            raise FileNotFoundError(f"no spec file {path}")
        presets = {preset.name: preset.spec for preset in self.presets().items}
        if str(spec) in presets:
            return dict(presets[str(spec)])
        raise GanforgeError(f"{spec!r} is neither a spec file nor a preset of {self.url} "
                            f"(presets: {', '.join(presets) or 'none'})")

    def job(self, job: str | BaseModel) -> JobOut:
        return self._get(JobOut, f"/v1/jobs/{self._id(job)}")

    def update(self, job: str | BaseModel, *, tags: list[str] | None = None, notes: str | None = None) -> JobOut:
        """Replace the job's tags and/or notes (the only parts of a job that change)."""
        body = {key: value for key, value in (("tags", tags), ("notes", notes)) if value is not None}
        return _parse(JobOut, self._send("PATCH", f"/v1/jobs/{self._id(job)}", json_body=body))

    def cancel(self, job: str | BaseModel) -> JobOut:
        return _parse(JobOut, self._send("POST", f"/v1/jobs/{self._id(job)}/cancel"))

    def job_page(self, status: str | None = None, limit: int = 50, cursor: str | None = None,
                 tag: str | list[str] | None = None, q: str | None = None) -> JobPage:
        """One page of the job list, newest first (``next_cursor`` for the next)."""
        params = {"status": status, "limit": limit, "cursor": cursor, "q": q,
                  "tag": [tag] if isinstance(tag, str) else tag}
        return self._get(JobPage, "/v1/jobs", {k: v for k, v in params.items() if v is not None})

    def jobs(self, status: str | None = None, limit: int = 50, cursor: str | None = None,
             tag: str | list[str] | None = None, q: str | None = None) -> Pages[JobSummary]:
        """Every job (of the filters: ``status``, ``tag`` — one or several, all of them —, ``q``: a
        part of the name), newest first, read ``limit`` a page as the iteration goes."""
        return Pages(lambda after: self.job_page(status, limit, after, tag, q), cursor)

    def wait(self, job: str | BaseModel, timeout: float | None = None,
             progress: bool | Callable[[JobOut], Any] | None = None, poll: float = 1.0) -> JobOut:
        """Poll until the job has ended and return its final view (whatever the status: check
        ``.status``). ``progress``: True for a progress bar on stderr, or a function called with
        each view. WaitTimeout after ``timeout`` seconds (the job keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                view = self.job(job)
                if progress is True:
                    bar = bar or _bar(view)
                    bar.update(view.progress.step - bar.n)
                    bar.set_postfix(status=view.status, refresh=False)
                elif callable(progress):
                    progress(view)
                if view.status in TERMINAL:
                    return view
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(view, timeout)
                time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
        finally:
            if bar is not None:
                bar.close()

    def metrics(self, job: str | BaseModel, names: list[str] | None = None, since_step: int | None = None,
                max_points: int | None = None) -> MetricsOut:
        params = {"names": ",".join(names) if names else None, "since_step": since_step, "max_points": max_points}
        return self._get(MetricsOut, f"/v1/jobs/{self._id(job)}/metrics",
                         {k: v for k, v in params.items() if v is not None})

    def logs(self, job: str | BaseModel) -> ArtifactList:
        """The job's multi-device attempt logs, each with a download URL."""
        return self._get(ArtifactList, f"/v1/jobs/{self._id(job)}/logs")

    def samples(self, job: str | BaseModel) -> ArtifactList:
        return self._get(ArtifactList, f"/v1/jobs/{self._id(job)}/samples")

    def checkpoints(self, job: str | BaseModel) -> CheckpointList:
        return self._get(CheckpointList, f"/v1/jobs/{self._id(job)}/checkpoints")

    def presets(self) -> PresetList:
        return self._get(PresetList, "/v1/presets")

    def generate(self, job: str | BaseModel, n: int = 64, seed: int = 0, labels: Any = None,
                 checkpoint: int | None = None, fmt: str = "png") -> bytes:
        body = {"n": n, "seed": seed, "labels": labels, "checkpoint": checkpoint, "format": fmt}
        return self._send("POST", f"/v1/jobs/{self._id(job)}/generate", json_body=body).content

    # ---- downloads --------------------------------------------------------------------------
    def download(self, url: str) -> bytes:
        """GET a listed download URL (presigned or API-signed; the API key goes with it when the URL
        is this service's own)."""
        return self._send("GET", url).content

    def download_to(self, url: str, path: str | os.PathLike, sha256: str | None = None) -> Path:
        """Stream ``url`` to ``path`` (through a temporary file beside it, so ``path`` is either
        whole or untouched), checking ``sha256`` when given."""
        path = Path(path)
        partial = path.with_name(path.name + ".part")
        digest = hashlib.sha256()
        with self._send("GET", url, stream=True) as response:
            try:
                with partial.open("wb") as out:
                    for chunk in response.iter_content(1 << 16):
                        out.write(chunk)
                        digest.update(chunk)
            except requests.exceptions.RequestException as exc:
                partial.unlink(missing_ok=True)
                raise ConnectionFailed(url, f"the download broke off: {_reason(exc)}") from None
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        if sha256 is not None and digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{url}: sha256 {digest.hexdigest()}, the listing said {sha256}")
        partial.replace(path)
        return path

    def download_samples(self, job: str | BaseModel, directory: str | os.PathLike) -> list[Path]:
        """Every sample grid of the job as ``step-NNNNNN.png`` in ``directory`` (made if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return [self.download_to(item.url, directory / f"step-{item.step:06d}.png", item.sha256)
                for item in self.samples(job).items]

    def download_generator(self, job: str | BaseModel, path: str | os.PathLike) -> Path:
        """The job's final generator file (``ganforge generate PATH`` samples from it locally)."""
        final = self.checkpoints(job).final
        if final is None:
            status = job.status if isinstance(job, JobSummary) else self.job(job).status
            raise GanforgeError(f"job {self._id(job)} has no final generator (it is {status}; "
                                "a job writes one when it succeeds)")
        return self.download_to(final.url, path, final.sha256)

    def download_bundle(self, job: str | BaseModel, path: str | os.PathLike) -> Path:
        """The whole job as one zip at ``path``: job.json, spec.json, metrics.csv and .jsonl,
        samples/, generator.pt, evaluation (GET /v1/jobs/{id}/bundle, streamed to disk)."""
        return self.download_to(f"/v1/jobs/{self._id(job)}/bundle", path)

    # ---- sweeps -----------------------------------------------------------------------------
    def submit_sweep(self, spec: Mapping[str, Any], idempotency_key: str | None = None) -> SweepOut:
        key = idempotency_key or uuid.uuid4().hex
        return _parse(SweepOut, self._send("POST", "/v1/sweeps", json_body=dict(spec),
                                           headers={"Idempotency-Key": key}))

    def sweep(self, sweep_id: str) -> SweepOut:
        return self._get(SweepOut, f"/v1/sweeps/{quote(sweep_id, safe='')}")

    def sweeps(self, status: str | None = None, limit: int = 50, cursor: str | None = None) -> SweepPage:
        """One page of the sweep list, newest first."""
        params = {"status": status, "limit": limit, "cursor": cursor}
        return self._get(SweepPage, "/v1/sweeps", {k: v for k, v in params.items() if v is not None})

    def sweep_trials(self, sweep_id: str) -> TrialList:
        return self._get(TrialList, f"/v1/sweeps/{quote(sweep_id, safe='')}/trials")

    def cancel_sweep(self, sweep_id: str) -> SweepOut:
        return _parse(SweepOut, self._send("POST", f"/v1/sweeps/{quote(sweep_id, safe='')}/cancel"))

    def sweep_curves(self, sweep_id: str, figure: str | None = None) -> dict[str, Any]:
        """Every trial's learning curve (its periodic evaluations) of ``figure`` (default: the objective's)."""
        params = {"figure": figure} if figure else None
        return self._send("GET", f"/v1/sweeps/{quote(sweep_id, safe='')}/curves", params=params).json()

    # ---- uploaded datasets ------------------------------------------------------------------
    def upload_dataset(self, path: str | os.PathLike[str], name: str | None = None,
                       idempotency_key: str | None = None) -> dict[str, Any]:
        """POST an archive (.zip, .tar, .tar.gz / .tgz) from disk, streamed from the file."""
        headers = {"Content-Type": archive_type(str(path)), "Content-Length": str(os.path.getsize(path))}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        with open(path, "rb") as body:
            return self._send("POST", "/v1/datasets", params={"name": name} if name else None, headers=headers,
                              data=body).json()

    def datasets(self, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """One page of the tenant's uploaded datasets, newest first."""
        params = {k: v for k, v in {"limit": limit, "cursor": cursor}.items() if v is not None}
        return self._send("GET", "/v1/datasets", params=params).json()

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._send("GET", f"/v1/datasets/{quote(dataset_id, safe='')}").json()

    def delete_dataset(self, dataset_id: str) -> None:
        self._send("DELETE", f"/v1/datasets/{quote(dataset_id, safe='')}").close()

    # ---- service ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._send("GET", "/healthz").json()

    def ready(self) -> dict[str, Any]:
        return self._send("GET", "/readyz").json()


def _parse(model: type[M], response: requests.Response) -> M:
    # extra="ignore": a field a newer server added does not break an older client.
    return model.model_validate(response.json(), extra="ignore")


def _reason(exc: Exception) -> str:
    """The innermost cause of a requests error, in a few words (not urllib3's pool repr)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    reason = getattr(exc, "reason", None) or exc
    return str(reason).split(": ", 1)[-1] if "object at 0x" in str(reason) else str(reason)


def _bar(view: JobOut):
    from tqdm import tqdm

    return tqdm(total=view.progress.total, unit="step", file=sys.stderr, dynamic_ncols=True,
                desc=view.name[:30], mininterval=0.5 if sys.stderr.isatty() else 30)
