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

from api.schemas import decode_cursor, encode_cursor
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
    from jobs.datasets import DatasetSourceError, check_source
    from tests.api.test_hostile_input import PRODUCTION

    with pytest.raises(DatasetSourceError, match="non-public"):
        check_source(f"https://[{address}]/x.npz", PRODUCTION)  # the real resolver: literals need no DNS


@pytest.mark.parametrize("address", ["2002:7f00:1::", "2002:a9fe:a9fe::", "2002:a00:1::"])
def test_host_names_answering_6to4_of_private_ipv4_are_refused(address):
    from jobs.datasets import DatasetSourceError, check_source
    from tests.api.test_hostile_input import PRODUCTION

    with pytest.raises(DatasetSourceError, match="non-public"):
        check_source("https://sixtofour.example.org/x.npz", PRODUCTION, lambda host, port: [address])


def test_public_ipv6_and_6to4_of_public_ipv4_still_pass():
    from jobs.datasets import check_source
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
    from jobs import datasets

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
