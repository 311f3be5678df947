"""Regression tests for the hardening review (issue 16): forged cursors, chunked bodies over the
limit, strict specs, IPv6 forms that embed IPv4, security headers, secrets in logs and error
texts, truthful rate-limit headers."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from ganforge.api.schemas import decode_cursor, encode_cursor
from tests.api.test_api import SPEC, assert_envelope, fields


# ---- 1. list cursors ---------------------------------------------------------------------------
def forged_cursor(stamp: str, job_id: str = "0" * 32) -> str:
    return base64.urlsafe_b64encode(f"{stamp}|{job_id}".encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("stamp", [
    "9999-12-31T23:59:59.999999-14:00",  # past datetime.max once in UTC
    "0001-01-01T00:00:00+14:00",  # before datetime.min once in UTC
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59:59.999999",
])
def test_a_cursor_at_the_calendar_edge_is_a_422_naming_the_cursor(api, stamp):
    error = assert_envelope(api.client.get(f"/v1/jobs?cursor={forged_cursor(stamp)}"), 422, "invalid_request")
    assert fields(error) == {"cursor"}


_ids = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
# Whole-minute offsets up to the +-23:59 Python allows (ISO 8601 offsets are minutes).
_zones = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda minutes: timezone(timedelta(minutes=minutes)))
# Anywhere in the calendar, and often within a day of either end (where offsets overflow).
_moments = st.one_of(st.datetimes(timezones=_zones), st.datetimes(max_value=datetime(1, 1, 2), timezones=_zones),
                     st.datetimes(min_value=datetime(9999, 12, 30), timezones=_zones))


@hsettings(max_examples=400, deadline=None)
@given(moment=_moments, job_id=_ids)
def test_cursor_codec_decodes_any_aware_stamp_or_refuses_it_with_value_error(moment, job_id):
    """Every timestamp Python can write, at every offset, decodes to a UTC position or a ValueError
    (the view's 422); nothing else escapes."""
    cursor = forged_cursor(moment.isoformat(), job_id)
    try:
        created_at, decoded_id = decode_cursor(cursor)
    except ValueError:
        return
    assert created_at == moment and created_at.tzinfo == timezone.utc and decoded_id == job_id


@hsettings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=150).map(lambda b: base64.urlsafe_b64encode(b).decode())))
def test_cursor_codec_refuses_arbitrary_text_with_value_error_only(cursor):
    try:
        created_at, job_id = decode_cursor(cursor)
    except ValueError:
        return
    assert created_at.tzinfo == timezone.utc and len(job_id) == 32


@hsettings(max_examples=200, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                           timezones=st.just(timezone.utc)), job_id=_ids)
def test_cursor_codec_round_trips(moment, job_id):
    assert decode_cursor(encode_cursor(moment, job_id)) == (moment, job_id)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moment=_moments)
def test_the_list_answers_any_forged_stamp_with_a_page_or_a_422(api, moment):
    response = api.client.get(f"/v1/jobs?cursor={forged_cursor(moment.isoformat())}")
    assert response.status_code in (200, 422), response.get_data(as_text=True)


# ---- 2. chunked bodies over the limit ----------------------------------------------------------
def padded_spec(size: int) -> bytes:
    """A valid spec padded with trailing spaces to ``size`` bytes (valid JSON at any length)."""
    body = json.dumps(SPEC).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def post_chunked(client, body: bytes):
    # What a WSGI server hands the app for `Transfer-Encoding: chunked`: a stream without a length
    # that the server ends (werkzeug's and gunicorn's set wsgi.input_terminated), CONTENT_LENGTH empty.
    return client.post("/v1/jobs", input_stream=io.BytesIO(body), content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""})


def test_a_chunked_body_over_the_limit_is_413_not_cut(make_api):
    h = make_api(max_body_bytes=2048)
    assert_envelope(post_chunked(h.client, padded_spec(4096)), 413, "payload_too_large")
    assert_envelope(post_chunked(h.client, padded_spec(2049)), 413, "payload_too_large")
    assert h.queue.sent == []
    # At and under the limit the whole body is read.
    assert post_chunked(h.client, padded_spec(2048)).status_code == 201
    assert post_chunked(h.client, json.dumps(SPEC).encode()).status_code == 201


def _chunked_request(port: int, body: bytes, chunk: int = 500) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for start in range(0, len(body), chunk):
            piece = body[start:start + chunk]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def test_a_chunked_body_over_the_limit_is_413_over_a_real_socket(make_api):
    from werkzeug.serving import make_server

    h = make_api(max_body_bytes=2048)
    server = make_server("127.0.0.1", 0, h.app, threaded=True)  # the embedded server (ganforge up)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, body = _chunked_request(server.server_port, padded_spec(3000))
        assert (status, body["error"]["code"]) == (413, "payload_too_large")
        status, body = _chunked_request(server.server_port, padded_spec(2000))
        assert status == 201 and body["status"] == "queued"
    finally:
        server.shutdown()


# ---- 3. strict specs ---------------------------------------------------------------------------
@pytest.mark.parametrize("section, key, value", [
    ("train", "steps", True), ("train", "steps", "200"), ("train", "batch_size", "16"),
    ("train", "lr_d", "0.001"), ("model", "g_batchnorm", 0), ("eval", "at_end", "false"),
])
def test_submit_refuses_coerced_types_naming_the_field(api, section, key, value):
    body = {**SPEC, section: {**SPEC[section], key: value}}
    error = assert_envelope(api.client.post("/v1/jobs", json=body), 422, "invalid_spec")
    assert fields(error) == {f"{section}.{key}"}
    assert api.queue.sent == []


def test_the_cli_refuses_coerced_types_naming_the_field(tmp_path, capsys):
    from gan_core.cli import main

    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**SPEC, "train": {**SPEC["train"], "steps": True}}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.steps" in err and "Traceback" not in err


# ---- 4. IPv6 forms that embed IPv4; slow resolvers --------------------------------------------
EMBEDDED_V4 = [
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254 (the metadata service)
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "::ffff:127.0.0.1", "::ffff:a9fe:a9fe", "::ffff:10.0.0.1",  # IPv4-mapped
    "::127.0.0.1", "::a9fe:a9fe", "::10.0.0.1",  # IPv4-compatible
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1",  # NAT64
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
]


@pytest.mark.parametrize("address", EMBEDDED_V4)
def test_ipv6_literals_embedding_private_ipv4_are_refused(address):
    from ganforge.jobs.datasets import DatasetSourceError, check_source
    from tests.api.test_hostile_input import PRODUCTION

    with pytest.raises(DatasetSourceError, match="non-public"):
        check_source(f"https://[{address}]/x.npz", PRODUCTION)  # the real resolver: literals need no DNS


@pytest.mark.parametrize("address", ["2002:7f00:1::", "2002:a9fe:a9fe::", "2002:a00:1::"])
def test_host_names_answering_6to4_of_private_ipv4_are_refused(address):
    from ganforge.jobs.datasets import DatasetSourceError, check_source
    from tests.api.test_hostile_input import PRODUCTION

    with pytest.raises(DatasetSourceError, match="non-public"):
        check_source("https://sixtofour.example.org/x.npz", PRODUCTION, lambda host, port: [address])


def test_public_ipv6_and_6to4_of_public_ipv4_still_pass():
    from ganforge.jobs.datasets import check_source
    from tests.api.test_hostile_input import PRODUCTION

    for address in ("2606:4700::6810:85e5", "2002:5db8:d822::", "::ffff:93.184.216.34"):
        assert check_source("https://data.example.org/x.npz", PRODUCTION, lambda h, p, a=address: [a]).addresses == (address,)


def test_the_api_refuses_a_6to4_dataset_url_naming_the_path(make_api):
    from tests.api.test_hostile_input import NPZ_SPEC

    h = make_api(allow_local_datasets=False)
    body = {**NPZ_SPEC, "dataset": {"name": "npz", "path": "https://[2002:a9fe:a9fe::]/latest/meta-data"}}
    error = assert_envelope(h.client.post("/v1/jobs", json=body), 422, "invalid_spec")
    assert fields(error) == {"dataset.path"}


def test_a_slow_resolver_does_not_hold_the_calling_thread(monkeypatch):
    from ganforge.jobs import datasets

    release = threading.Event()
    callers: list[str] = []

    def stuck_getaddrinfo(host, port, *args, **kwargs):
        callers.append(threading.current_thread().name)
        release.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(datasets.socket, "getaddrinfo", stuck_getaddrinfo)
    monkeypatch.setattr(datasets, "RESOLVE_TIMEOUT_SECONDS", 0.2)
    try:
        with pytest.raises(datasets.DatasetSourceError, match="cannot resolve"):
            datasets.resolve("slow.example.org", 443)
        assert callers and callers[0] != threading.current_thread().name  # looked up off this thread
    finally:
        release.set()


# ---- 5. security headers -----------------------------------------------------------------------
def assert_hardened(response, page: bool) -> None:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    policy = {d.split()[0]: d.split()[1:] for d in headers["Content-Security-Policy"].split("; ")}
    assert policy["frame-ancestors"] == ["'none'"]
    if page:
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    else:
        assert policy["default-src"] == ["'none'"]


@pytest.mark.parametrize("path", ["/", "/submit", "/jobs/" + "a" * 32, "/docs"])
def test_pages_send_the_security_headers(api, path):
    response = api.client.get(path)
    assert response.mimetype == "text/html"
    assert_hardened(response, page=True)


def test_pages_have_no_inline_script_or_style(api):
    """What the page policy would block: the dashboard's code must all be files under /static."""
    import re

    for path in ("/", "/submit", "/jobs/" + "a" * 32, "/docs"):
        html = api.client.get(path).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert "<style" not in html and " style=" not in html and not re.search(r"\son[a-z]+=", html), path
        for asset in re.findall(r"(?:src|href)=['\"](/static/[^'\"]+)", html):
            assert api.client.get(asset).status_code == 200, asset


def test_api_answers_and_artifact_content_send_the_security_headers(api):
    from ganforge.jobs.storage import sample_key
    from tests.api.test_api import add_artifact, local_path, running_job

    assert_hardened(api.client.get("/v1/jobs"), page=False)
    assert_hardened(api.client.get("/v1/jobs/" + "b" * 32), page=False)  # errors too
    job_id, token = running_job(api.db)
    add_artifact(api, job_id, token, "sample_grid", 1, sample_key(job_id, 1), b"png", "image/png")
    [sample] = api.client.get(f"/v1/jobs/{job_id}/samples").get_json()["items"]
    content = api.client.get(local_path(sample["url"]))
    assert content.status_code == 200 and content.mimetype == "image/png"
    assert_hardened(content, page=False)
    assert_hardened(api.client.get("/static/dashboard.js"), page=False)


# ---- 7. truthful rate-limit headers ------------------------------------------------------------
def test_a_submission_refused_by_a_cap_says_nothing_remains(make_api):
    h = make_api(max_queued_per_tenant=2, max_active_per_tenant=3, submit_rate_per_minute=10)
    accepted = [h.client.post("/v1/jobs", json=SPEC) for _ in range(2)]
    assert [r.headers["X-RateLimit-Remaining"] for r in accepted] == ["9", "8"]
    refused = h.client.post("/v1/jobs", json=SPEC)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "too_many_queued"
    assert refused.headers["X-RateLimit-Remaining"] == "0" and refused.headers["Retry-After"]
    assert refused.headers["X-RateLimit-Limit"] == "10"
    # The refusal used up nothing: once a slot frees, the rate window still has 8 left.
    from ganforge.jobs import lifecycle

    lifecycle.claim(h.db, accepted[0].get_json()["id"], "w", 60)
    assert h.client.post("/v1/jobs", json=SPEC).headers["X-RateLimit-Remaining"] == "7"
    lifecycle.claim(h.db, accepted[1].get_json()["id"], "w", 60)
    refused = h.client.post("/v1/jobs", json=SPEC)  # 2 running + 1 queued = 3 active
    assert refused.get_json()["error"]["code"] == "too_many_active"
    assert refused.headers["X-RateLimit-Remaining"] == "0"


# ---- 6. secrets in logs, network detail in reasons ---------------------------------------------
from tests.api.test_cli_security import embedded_home  # noqa: E402,F401 (a fixture)


def test_the_embedded_servers_access_log_has_no_query_strings(embedded_home, caplog):
    import logging
    import urllib.error
    import urllib.request

    from ganforge.cli.serve import _serve_embedded

    caplog.set_level(logging.INFO, logger="werkzeug")
    server = _serve_embedded("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1/artifacts/{'c' * 32}/content?exp=9999999999&sig=SECRETSIG"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url, timeout=10)
    finally:
        server.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any(f"/v1/artifacts/{'c' * 32}/content" in line for line in lines), lines  # the line is still written
    assert not [line for line in caplog.messages if "SECRETSIG" in line or "sig=" in line], caplog.messages


def test_gunicorns_access_format_has_no_query_string():
    from ganforge.cli.serve import gunicorn_argv

    argv = gunicorn_argv("127.0.0.1", 8080, 1)
    access_format = argv[argv.index("--access-logformat") + 1]
    assert "%(U)s" in access_format and "%(r)s" not in access_format and "%(q)s" not in access_format


NETWORK_DETAIL = ("Errno", "111", "refused", "CERTIFICATE", "10.0.3.4", "9000", "Name or service")


def _npz_spec(path: str):
    from gan_core.spec import JobSpec
    from tests.api.test_hostile_input import NPZ_SPEC

    return JobSpec.model_validate({**NPZ_SPEC, "dataset": {"name": "npz", "path": path}})


@pytest.mark.parametrize("failure", [
    ConnectionRefusedError(111, "Connection refused"),
    __import__("ssl").SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
    TimeoutError("timed out"),
])
def test_an_https_download_failure_tells_the_tenant_no_network_detail(monkeypatch, caplog, failure):
    import logging

    from ganforge.jobs import datasets
    from tests.api.test_hostile_input import PRODUCTION, fake_resolver

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(socket, "create_connection", fail)
    caplog.set_level(logging.WARNING, logger="ganforge.jobs.datasets")
    with pytest.raises(datasets.DatasetSourceError) as info:
        datasets.localise(_npz_spec("https://data.example.org/x.npz?token=t0p"), PRODUCTION, "d" * 32, fake_resolver)
    assert str(info.value) == "could not download the dataset from data.example.org: connection failed"
    assert repr(failure) in caplog.text and "t0p" not in caplog.text  # the detail is in the worker's log


def test_s3_and_resolver_failures_tell_the_tenant_no_network_detail(monkeypatch):
    from ganforge.jobs import datasets
    from tests.api.test_hostile_input import PRODUCTION, fake_resolver

    class Store:
        def __init__(self, exc):
            self.exc = exc

        def get_object(self, Bucket, Key):
            raise self.exc

    class ClientError(Exception):
        response = {"Error": {"Code": "NoSuchKey", "Message": "The specified key does not exist."}}

    spec = _npz_spec("s3://user-data/a/x.npz")
    with pytest.raises(datasets.DatasetSourceError) as info:
        datasets.localise(spec, PRODUCTION, "e" * 32, fake_resolver,
                          s3_client=Store(OSError("Could not connect to the endpoint URL: http://10.0.3.4:9000/")))
    assert str(info.value) == "could not read the dataset s3://user-data/a/x.npz: connection failed"
    with pytest.raises(datasets.DatasetSourceError, match="the store answered NoSuchKey$"):
        datasets.localise(spec, PRODUCTION, "e" * 32, fake_resolver, s3_client=Store(ClientError()))

    def no_name(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(datasets.socket, "getaddrinfo", no_name)
    with pytest.raises(datasets.DatasetSourceError) as info:
        datasets.resolve("nowhere.example.org", 443)
    assert not [word for word in NETWORK_DETAIL if word in str(info.value)], str(info.value)


@pytest.mark.parametrize("failure, reason", [
    ("https", "could not download the dataset from 93.184.216.34: connection failed"),
    ("mirrors", "could not download the dataset from its mirrors (the worker's log has the details)"),
    ("outage", "internal error (OperationalError); the worker's log has the details"),
])
def test_a_failed_jobs_reason_holds_no_network_detail(make_api, monkeypatch, failure, reason):
    from gan_core.data import DownloadError
    from ganforge.jobs import datasets, lifecycle
    from ganforge.worker import runner

    h = make_api()
    if failure == "https":
        def refuse(*args, **kwargs):
            raise ConnectionRefusedError(111, "Connection refused")

        monkeypatch.setattr(socket, "create_connection", refuse)
    else:
        class OperationalError(Exception):
            pass

        exc = (DownloadError("could not get mnist/x from any mirror; tried:\n  https://m/x: [Errno 111] Connection refused")
               if failure == "mirrors" else
               OperationalError('connection to server at "10.0.3.4", port 5432 failed: Connection refused'))

        def broken(*args, **kwargs):
            raise exc

        monkeypatch.setattr(datasets, "localise", broken)
    with h.db.session() as session:
        job_id = lifecycle.submit(session, _npz_spec("https://93.184.216.34/x.npz")).id
    assert runner.run_job(h.services, job_id, "test-worker") == "failed"
    view = h.client.get(f"/v1/jobs/{job_id}").get_json()
    assert view["status"] == "failed" and view["error"] == reason
    assert not [word for word in NETWORK_DETAIL if word in view["error"]]
