"""The HTTP client commands: submit, status, list, cancel, samples, generate (for a job id)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gan_core import cli as local
from gan_core.cli import CLIError, read_spec
from ganforge.cli.follow import submit_and_wait
from ganforge.client import APIError, Client


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url)


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _call(fn, *a, **k):
    try:
        return fn(*a, **k)
    except APIError as exc:
        raise CLIError(exc.describe()) from None
    except OSError as exc:
        raise CLIError(f"cannot reach the service: {exc}") from None


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.wait:
        return submit_and_wait(client, args.spec, show_progress=not args.json, json_out=args.json)
    spec = read_spec(args.spec)
    try:
        job = client.submit(spec.model_dump(mode="json"))
    except APIError as exc:
        raise CLIError(exc.describe()) from None
    _out(args, job, job["id"])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    job = _call(_client(args).job, args.id)
    p = job["progress"]
    _out(args, job, f"{job['id']} {job['name']} {job['status']} step {p['step']}/{p['total']} attempts {job['attempts']}"
         + (f" error: {job['error']}" if job.get("error") else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    page = _call(_client(args).jobs, status=args.status, limit=args.limit, cursor=args.cursor)
    lines = [f"{j['id']}  {j['status']:9s} {j['progress']['step']:>7d}/{j['progress']['total']:<7d} {j['name']}" for j in page["items"]]
    if page.get("next_cursor"):
        lines.append(f"(more: --cursor {page['next_cursor']})")
    _out(args, page, "\n".join(lines) or "no jobs")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _call(_client(args).cancel, args.id)
    _out(args, job, f"{job['id']} {job['status']}" + (" (cancellation requested)" if job["status"] == "running" else ""))
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
    if Path(args.checkpoint).exists():
        return local.cmd_generate(args)
    client = _client(args)
    out = Path(args.out)
    fmt = "npy" if out.suffix == ".npy" else "png"
    data = _call(client.generate, args.checkpoint, n=args.n, seed=args.seed, labels=local.parse_labels(args.labels),
                 checkpoint=args.step, fmt=fmt)
    out.write_bytes(data)
    _out(args, {"file": str(out), "bytes": len(data)}, f"wrote {out}")
    return 0


def add_client_parser(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """A command that talks to the service: with --url and --json."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--url", help="service URL (default $GANFORGE_URL or http://127.0.0.1:8080); "
                                 "the API key comes from $GANFORGE_API_KEY")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def add_commands(sub: argparse._SubParsersAction) -> None:
    def client_parser(name: str, help: str) -> argparse.ArgumentParser:
        return add_client_parser(sub, name, help)

    p = client_parser("submit", "submit a job spec")
    p.add_argument("spec")
    p.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    p.set_defaults(func=cmd_submit)
    p = client_parser("status", "show a job")
    p.add_argument("id")
    p.set_defaults(func=cmd_status)
    p = client_parser("list", "list jobs, newest first")
    p.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"))
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.set_defaults(func=cmd_list)
    p = client_parser("cancel", "cancel a job")
    p.add_argument("id")
    p.set_defaults(func=cmd_cancel)
    p = client_parser("samples", "download a job's sample grids")
    p.add_argument("id")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_samples)
    # gan_core's `generate` (already on the parser) also takes a job id
    p = sub.choices["generate"]
    p.add_argument("--url", help="service URL, when CHECKPOINT is a job id")
    p.add_argument("--step", type=int, help="with a job id: checkpoint step (default: the final generator)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_generate)
