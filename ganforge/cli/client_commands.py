"""The HTTP client commands: submit, status, list, cancel, wait, logs, samples, generate (for a
job id).

Every command takes ``--json``: its result as JSON on stdout, and its errors too
(``{"error": {"message", "exit_code", ...}}``, see gan_core.cli.run); the progress bar and
hints go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

from gan_core import cli as local
from gan_core.cli import CLIError, add_command
from ganforge.cli import follow
from ganforge.cli.follow import TERMINAL, spec_for_submit, submit_and_wait
from ganforge.client import APIError, Client, jsonable

DEFAULT_URL = "http://127.0.0.1:8080"
JOB_ID = re.compile(r"[0-9a-f]{32}")


def check_url(url: str | None) -> str:
    """The service's root URL from --url, $GANFORGE_URL or the default, checked before any request."""
    given, where = (url, "--url") if url else (os.environ.get("GANFORGE_URL"), "$GANFORGE_URL")
    if not given:
        return DEFAULT_URL
    parts = urllib.parse.urlsplit(given)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        example = given if "://" in given else f"http://{given}"
        raise CLIError(f"{where} {given!r}: give the scheme and host, e.g. {example}", 2)
    if parts.path.rstrip("/").endswith("/v1") or "/v1/" in parts.path:
        root = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.split("/v1")[0], "", ""))
        raise CLIError(f"{where} {given!r}: give the service's root without /v1 (the commands add it), e.g. {root}", 2)
    if parts.query or parts.fragment:
        raise CLIError(f"{where} {given!r}: a root URL has no query or fragment", 2)
    return given


def _client(args: argparse.Namespace) -> Client:
    return Client(check_url(getattr(args, "url", None)))


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=jsonable) if args.json else text)


def api_error(exc: APIError) -> CLIError:
    return CLIError(exc.describe(), 1, {"status": exc.status, "code": exc.code, "details": exc.details})


def unreachable(url: str, exc: OSError) -> CLIError:
    # The service's root URL is named (the client's ConnectionFailed also knows the request's).
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, OSError) and reason.strerror:
        reason = reason.strerror.lower()  # "connection refused", not "[Errno 111] Connection refused"
    return CLIError(f"cannot reach the ganforge service at {url} ({reason}); start one with `ganforge up`, "
                    "or point --url / $GANFORGE_URL at yours", 1, {"url": url})


def _call(fn, *a, **k):
    """Run a client call; the service's error answers and an unreachable service become CLIErrors."""
    try:
        return fn(*a, **k)
    except APIError as exc:
        raise api_error(exc) from None
    except OSError as exc:
        client = getattr(fn, "__self__", None) or next((x for x in a if isinstance(x, Client)), None)
        raise unreachable(getattr(client, "url", "the service"), exc) from None


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.wait:
        return submit_and_wait(client, args.spec, show_progress=not args.json, json_out=args.json)
    job = _call(client.submit, spec_for_submit(args.spec))
    _out(args, job, job["id"])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    job = _call(_client(args).job, args.id)
    p = job["progress"]
    _out(args, job, f"{job['id']} {job['name']} {job['status']} step {p['step']}/{p['total']} attempts {job['attempts']}"
         + (f" error: {job['error']}" if job.get("error") else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    page = _call(_client(args).job_page, status=args.status, limit=args.limit, cursor=args.cursor)
    lines = [f"{j['id']}  {j['status']:9s} {j['progress']['step']:>7d}/{j['progress']['total']:<7d} {j['name']}" for j in page["items"]]
    if page.get("next_cursor"):
        lines.append(f"(more: --cursor {page['next_cursor']})")
    _out(args, page, "\n".join(lines) or "no jobs")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    client = _client(args)
    before = _call(client.job, args.id)
    if before["status"] == "cancelled":
        _out(args, before, f"{args.id} was already cancelled")
        return 0
    if before["status"] in TERMINAL:
        raise CLIError(f"job {args.id} already ended ({before['status']}): there is nothing to cancel", 1,
                       {"status": 409, "code": "conflict", "job_status": before["status"]})
    if before["status"] == "running" and before.get("cancel_requested"):
        _out(args, before, f"{args.id} running: cancellation was already requested; it stops at its worker's next "
             f"heartbeat (follow it with `ganforge wait {args.id}`)")
        return 0
    try:
        job = client.cancel(args.id)
    except APIError as exc:
        if exc.status == 409:  # it ended between the two calls
            now = _call(client.job, args.id)
            raise CLIError(f"job {args.id} already ended ({now['status']}): there is nothing to cancel", 1,
                           {"status": 409, "code": exc.code, "job_status": now["status"]}) from None
        raise api_error(exc) from None
    except OSError as exc:
        raise unreachable(client.url, exc) from None
    _out(args, job, f"{job['id']} {job['status']}" + (" (cancellation requested: it stops at its worker's next "
                                                      "heartbeat and saves a checkpoint)" if job["status"] == "running" else ""))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """Re-attach to a job: the progress bar until it ends, then its summary."""
    client = _client(args)
    job = follow.follow(client, args.id, show_progress=not args.json)
    if args.json:
        print(json.dumps(job, indent=2, default=jsonable))
    else:
        follow.print_summary(client, job)
    return 0 if job["status"] == "succeeded" else 1


def _event_line(event: dict[str, Any]) -> str:
    change = event["to"] if event["from"] in (None, event["to"]) else f"{event['from']} -> {event['to']}"
    attempt = f" (attempt {event['attempt']})" if event.get("attempt") else ""
    return f"{event['at']}  {change}{attempt}: {event['message'] or ''}".rstrip(": ")


def log_line_text(line: dict[str, Any]) -> str:
    rank = f" [rank {line['rank']}]" if line.get("rank") is not None else ""
    return f"{line['time']}  {line['level']:<7}{rank} {line['message']}"


def _new_log_lines(client: Client, job_id: str, since: int) -> tuple[list[dict[str, Any]], int]:
    """The job's stored log lines from ``since`` on (every page), and the cursor after them."""
    lines: list[dict[str, Any]] = []
    while True:
        page = _call(client.logs, job_id, since)
        lines += [line.model_dump() if hasattr(line, "model_dump") else line for line in page["lines"]]
        since = page["next"]
        if not page["more"]:
            return lines, since


def cmd_logs(args: argparse.Namespace) -> int:
    """The job's events (status changes and what the worker reported), then its log lines (the
    worker's and each rank's); with --follow, both as they come until the job ends."""
    client = _client(args)
    seen, since = 0, 0
    while True:
        job = _call(client.job, args.id)
        events = job.get("events", [])
        fresh, seen = events[seen:], len(events)
        if args.json and not args.follow:
            lines, _ = _new_log_lines(client, args.id, 0)
            print(json.dumps({"id": job["id"], "status": job["status"], "events": events, "lines": lines}, indent=2, default=jsonable))
            return 0
        for event in fresh:
            print(json.dumps(event, default=jsonable) if args.json else _event_line(event), flush=True)
        lines, since = _new_log_lines(client, args.id, since)
        for line in lines:
            print(json.dumps({"line": line}) if args.json else log_line_text(line), flush=True)
        if not args.follow or job["status"] in TERMINAL:
            break
        time.sleep(args.interval)
    if args.follow:  # the worker stores its last lines just after the final status
        for _ in range(2):
            time.sleep(max(args.interval, 0.5))
            lines, since = _new_log_lines(client, args.id, since)
            for line in lines:
                print(json.dumps({"line": line}) if args.json else log_line_text(line), flush=True)
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    client = _client(args)
    items = _call(client.samples, args.id)["items"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for item in items:
        path = out / f"step-{item['step']:06d}.png"
        path.write_bytes(_call(client.download, item["url"]))
        written.append(str(path))
    _out(args, {"files": written}, f"downloaded {len(written)} sample grids to {out}/")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """``generate`` is local for a checkpoint file (gan_core's command) and remote for a job id."""
    out = Path(args.out)
    fmt = local.output_format(out)  # before the service does any work
    if Path(args.checkpoint).exists():
        return local.cmd_generate(args)
    if not JOB_ID.fullmatch(args.checkpoint):
        raise CLIError(f"{args.checkpoint}: no such checkpoint file (nor a job id: those are 32 hex digits)", 2)
    client = _client(args)
    data = _call(client.generate, args.checkpoint, n=args.n, seed=args.seed, labels=local.parse_labels(args.labels),
                 checkpoint=args.step, fmt="npy" if fmt == "npy" else "png")
    if fmt == "jpeg":
        from gan_core.images import png_to_jpeg  # numpy and pillow: only when a command needs them

        data = png_to_jpeg(data)
    out.write_bytes(data)
    _out(args, {"file": str(out), "bytes": len(data)}, f"wrote {out}")
    return 0


def add_client_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--url", help=f"the service's root URL (default $GANFORGE_URL, else {DEFAULT_URL}), without /v1; "
                                 "the API key comes from $GANFORGE_API_KEY")
    p.add_argument("--json", action="store_true",
                   help="JSON on stdout, errors included ({\"error\": {...}} with the exit code)")
    return p


def add_client_command(sub: argparse._SubParsersAction, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A command that talks to the service: its help, one example, --url and --json."""
    return add_client_options(add_command(sub, name, help, [example]))


def add_commands(sub: argparse._SubParsersAction) -> None:
    def client_parser(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return add_client_command(sub, name, help, example)

    p = client_parser("submit", "submit a job spec (a file, or a preset's name)", "ganforge submit ring8 --wait")
    p.add_argument("spec", help="job spec JSON file, or a preset's name (`ganforge presets` lists them)")
    p.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    p.set_defaults(func=cmd_submit)
    p = client_parser("status", "show a job", "ganforge status 3f2a... --json")
    p.add_argument("id", help="job id")
    p.set_defaults(func=cmd_status)
    p = client_parser("list", "list jobs, newest first", "ganforge list --status running")
    p.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"),
                   help="only jobs in this state")
    p.add_argument("--limit", type=int, default=50, help="jobs per page (default 50)")
    p.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    p.set_defaults(func=cmd_list)
    p = client_parser("cancel", "cancel a job (queued: at once; running: at its next heartbeat, with a checkpoint)",
                      "ganforge cancel 3f2a...")
    p.add_argument("id", help="job id")
    p.set_defaults(func=cmd_cancel)
    p = client_parser("wait", "follow a job with a progress bar until it ends, then show its results (exit status 0 "
                      "if it succeeded)", "ganforge wait 3f2a...")
    p.add_argument("id", help="job id")
    p.set_defaults(func=cmd_wait)
    p = client_parser("logs", "a job's log: its events (each status change and what the worker reported: claims, "
                      "retries, cancellation, errors), then the worker's log lines for the job (time, level, "
                      "for multi-device jobs the rank, message)",
                      "ganforge logs 3f2a... --follow")
    p.add_argument("id", help="job id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events and log lines until the job ends")
    p.add_argument("--interval", type=float, default=1.0, help="with --follow: seconds between polls (default 1)")
    p.set_defaults(func=cmd_logs)
    p = client_parser("samples", "download a job's sample grids", "ganforge samples 3f2a... --out grids/")
    p.add_argument("id", help="job id")
    p.add_argument("--out", required=True, help="folder for the grids (step-NNNNNN.png); created if missing")
    p.set_defaults(func=cmd_samples)
    # gan_core's `generate` (already on the parser) also takes a job id
    p = sub.choices["generate"]
    for action in p._actions:
        if action.dest == "checkpoint":
            action.help = "a checkpoint or final generator file (.pt), or a job id (the service samples its generator)"
    p.add_argument("--url", help="with a job id: the service's root URL (default $GANFORGE_URL, else "
                                 f"{DEFAULT_URL})")
    p.add_argument("--step", type=int, help="with a job id: checkpoint step (default: the final generator)")
    p.add_argument("--json", action="store_true", help="JSON on stdout, errors included")
    p.set_defaults(func=cmd_generate)


