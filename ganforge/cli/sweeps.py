"""``ganforge sweep submit|status|list|cancel|best``: sweeps over HTTP (see jobs/sweep_spec.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gan_core.cli import CLIError, add_command
from ganforge.cli.client_commands import _call, _client, _out, add_client_command
from ganforge.client import jsonable
from ganforge.resources import sweep_preset_text

SWEEP_TERMINAL = ("succeeded", "failed", "cancelled")
TRIAL_ENDED = ("succeeded", "failed", "cancelled", "pruned")


def _read(path: str) -> dict[str, Any]:
    """The sweep file (or the preset of that name) as JSON; the service validates it (and names
    any field at fault)."""
    # Ready-made sweeps (presets/sweeps/NAME.json, shipped beside the job presets): `ganforge sweep submit NAME`.
    preset = None if Path(path).exists() else sweep_preset_text(path)
    try:
        doc = json.loads(preset if preset is not None else Path(path).read_text())
    except OSError as exc:
        raise CLIError(f"{path}: cannot read the sweep ({exc.strerror})", 2) from None
    except json.JSONDecodeError as exc:
        raise CLIError(f"{path}: not valid JSON: {exc}", 2) from None
    if not isinstance(doc, dict):
        raise CLIError(f"{path}: a sweep is a JSON object", 2)
    return doc


def _line(sweep: dict[str, Any]) -> str:
    counts = " ".join(f"{k} {v}" for k, v in sweep["counts"].items() if v)
    best = sweep.get("best_trial")
    objective = sweep["objective"]
    tail = (f"; best {objective['metric']} {best['objective']:.4g} (trial {best['number']}, job {best['job_id']})"
            if best else "")
    return f"{sweep['id']} {sweep['name']} {sweep['status']}: {counts or 'no trials yet'}{tail}" + (
        f" error: {sweep['error']}" if sweep.get("error") else "")


def wait(client, sweep_id: str, show_progress: bool) -> dict[str, Any]:
    """Poll until the sweep ends, with a bar over its trials."""
    from tqdm import tqdm

    sweep = client.sweep(sweep_id)
    bar = tqdm(total=sweep["trials"], unit="trial", disable=not show_progress, file=sys.stderr, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    try:
        while True:
            sweep = client.sweep(sweep_id)
            ended = sum(sweep["counts"][state] for state in TRIAL_ENDED)
            bar.update(ended - bar.n)
            best = sweep.get("best_trial")
            bar.set_postfix(status=sweep["status"], running=sweep["counts"]["running"],
                            best=f"{best['objective']:.4g}" if best else "-", refresh=False)
            if sweep["status"] in SWEEP_TERMINAL:
                return sweep
            time.sleep(1.0)
    finally:
        bar.close()


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    sweep = _call(client.submit_sweep, _read(args.sweep))
    if not args.wait:
        _out(args, sweep, sweep["id"])
        return 0
    if not args.json:
        print(f"submitted sweep {sweep['id']} ({sweep['name']}, {sweep['trials']} trials)", flush=True)
    try:
        sweep = _call(wait, client, sweep["id"], not args.json)
    except KeyboardInterrupt:
        raise CLIError(f"stopped following sweep {sweep['id']}; it keeps running on the service: see it with "
                       f"`ganforge sweep status {sweep['id']}`, stop it with `ganforge sweep cancel {sweep['id']}`",
                       130, {"id": sweep["id"], "keeps_running": True}) from None
    _out(args, sweep, _line(sweep))
    return 0 if sweep["status"] == "succeeded" else 1


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    sweep = _call(client.sweep, args.id)
    if args.json:
        _out(args, {**sweep, "trials_detail": _call(client.sweep_trials, args.id)["items"]}, "")
        return 0
    lines = [_line(sweep)]
    for t in _call(client.sweep_trials, args.id)["items"]:
        value = "-" if t["objective"] is None else f"{t['objective']:.4g}"
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        lines.append(f"  #{t['number']:<3d} {t['status']:9s} {value:>9s}  {params}  {t['job_id'] or ''}"
                     + (f"  ({t['reason']})" if t["reason"] and t["status"] != "succeeded" else ""))
    print("\n".join(lines))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    page = _call(_client(args).sweeps, status=args.status, limit=args.limit, cursor=args.cursor)
    lines = [f"{s['id']}  {s['status']:9s} {s['method']:6s} {s['trials']:>4d} trials  {s['name']}" for s in page["items"]]
    if page.get("next_cursor"):
        lines.append(f"(more: --cursor {page['next_cursor']})")
    _out(args, page, "\n".join(lines) or "no sweeps")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    sweep = _call(_client(args).cancel_sweep, args.id)
    _out(args, sweep, _line(sweep))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    """The best trial so far: its parameters and objective; its final generator and sample grids
    downloaded into --out."""
    client = _client(args)
    sweep = _call(client.sweep, args.id)
    best = sweep.get("best_trial")
    if best is None:
        raise CLIError(f"sweep {args.id} has no succeeded trial yet ({sweep['status']})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    final = _call(client.checkpoints, best["job_id"]).get("final")
    if final:
        (out / "generator.pt").write_bytes(_call(client.download, final["url"]))
        written.append(str(out / "generator.pt"))
    for item in _call(client.samples, best["job_id"])["items"]:
        path = out / f"step-{item['step']:06d}.png"
        path.write_bytes(_call(client.download, item["url"]))
        written.append(str(path))
    (out / "trial.json").write_text(json.dumps(best, indent=2, default=jsonable))
    written.append(str(out / "trial.json"))
    _out(args, {**best, "files": written},
         f"trial {best['number']} (job {best['job_id']}): {sweep['objective']['metric']} {best['objective']:.4g}, "
         f"{json.dumps(best['params'])}\ndownloaded {len(written)} files to {out}/")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    sweep = add_command(sub, "sweep", "sweeps: many jobs from one search (submit, status, list, cancel, best)",
                        ["ganforge sweep submit lr-search.json --wait", "ganforge sweep best 9c1e... --out best/"])
    commands = sweep.add_subparsers(dest="sweep_command", required=True, metavar="{submit,status,list,cancel,best}")

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return add_client_command(commands, name, help, example)

    p = command("submit", "submit a sweep file (JSON) or a preset of presets/sweeps by name",
                "ganforge sweep submit grid25-search --wait")
    p.add_argument("sweep", help="a sweep file (JSON: a base spec, the parameters to search, the objective), "
                   "or a sweep preset's name (e.g. grid25-search)")
    p.add_argument("--wait", action="store_true", help="follow the sweep with a progress bar over its trials")
    p.set_defaults(func=cmd_submit)
    p = command("status", "show a sweep and its trials", "ganforge sweep status 9c1e...")
    p.add_argument("id", help="sweep id")
    p.set_defaults(func=cmd_status)
    p = command("list", "list sweeps, newest first", "ganforge sweep list --status running")
    p.add_argument("--status", choices=SWEEP_TERMINAL + ("queued", "running"), help="only sweeps in this state")
    p.add_argument("--limit", type=int, default=50, help="sweeps per page (default 50)")
    p.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    p.set_defaults(func=cmd_list)
    p = command("cancel", "cancel a sweep and its queued and running trials", "ganforge sweep cancel 9c1e...")
    p.add_argument("id", help="sweep id")
    p.set_defaults(func=cmd_cancel)
    p = command("best", "download the best trial's generator and sample grids", "ganforge sweep best 9c1e... --out best/")
    p.add_argument("id", help="sweep id")
    p.add_argument("--out", required=True, help="folder for generator.pt, the grids and trial.json; created if missing")
    p.set_defaults(func=cmd_best)
