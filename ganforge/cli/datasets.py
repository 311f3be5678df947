"""``ganforge datasets upload|list|show|delete``: archives of images to train on (/v1/datasets).

    ganforge datasets upload faces.zip --name faces     # prints the id for dataset.upload_id
    ganforge datasets list
    ganforge datasets show ID
    ganforge datasets delete ID
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from gan_core.cli import CLIError, add_command
from ganforge.cli.client_commands import _call, _client, _out, add_client_command
from ganforge.client import archive_type


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # not reached


def _line(d: dict[str, Any]) -> str:
    classes = f", {len(d['classes'])} classes" if d.get("classes") else ""
    return (f"{d['id']}  {d['name']}: {d['images']} images, {d['skipped']} skipped of {d['files']} files"
            f"{classes}, {_size(d['bytes'])}")


def cmd_upload(args: argparse.Namespace) -> int:
    try:
        archive_type(args.file)
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None
    if not os.path.isfile(args.file):
        raise CLIError(f"{args.file}: no such file", 2)
    name = args.name or os.path.basename(args.file).split(".", 1)[0] or "dataset"
    dataset = _call(_client(args).upload_dataset, args.file, name, args.idempotency_key)
    _out(args, dataset, _line(dataset) + f'\ntrain on it with "dataset": {{"name": "image_folder", '
                                         f'"upload_id": "{dataset["id"]}"}}')
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    page = _call(_client(args).datasets, limit=args.limit, cursor=args.cursor)
    lines = [_line(d) for d in page["items"]]
    if page.get("next_cursor"):
        lines.append(f"(more: --cursor {page['next_cursor']})")
    _out(args, page, "\n".join(lines) or "no datasets")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    d = _call(_client(args).dataset, args.id)
    lines = [_line(d), f"  uploaded {d['created_at']}, {d['content_type']}, sha256 {d['sha256']}"]
    if d.get("classes"):
        lines.append("  classes: " + ", ".join(map(str, d["classes"])))
    _out(args, d, "\n".join(lines))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _call(_client(args).delete_dataset, args.id)
    _out(args, {"id": args.id, "deleted": True}, f"deleted {args.id}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    datasets = add_command(sub, "datasets", "uploaded image archives to train on (upload, list, show, delete)",
                           ["ganforge datasets upload faces.zip --name faces", "ganforge datasets list"])
    commands = datasets.add_subparsers(dest="datasets_command", required=True, metavar="{upload,list,show,delete}")

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return add_client_command(commands, name, help, example)

    p = command("upload", "upload a .zip, .tar or .tar.gz of images (class sub-folders become labels); prints its id "
                "for the spec's dataset.upload_id", "ganforge datasets upload faces.zip --name faces")
    p.add_argument("file", help="the archive: .zip, .tar, .tar.gz or .tgz of PNG/JPEG/WebP images")
    p.add_argument("--name", help="a label for it (default: the file's name)")
    p.add_argument("--idempotency-key", help="a retry with the same key returns the first upload")
    p.set_defaults(func=cmd_upload)
    p = command("list", "list uploaded datasets, newest first", "ganforge datasets list --limit 10")
    p.add_argument("--limit", type=int, default=50, help="datasets per page (default 50)")
    p.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    p.set_defaults(func=cmd_list)
    p = command("show", "show one uploaded dataset (files, images, skipped, classes, bytes)", "ganforge datasets show 3f2a...")
    p.add_argument("id", help="dataset id")
    p.set_defaults(func=cmd_show)
    p = command("delete", "delete an uploaded dataset (refused while a queued or running job uses it)",
                "ganforge datasets delete 3f2a...")
    p.add_argument("id", help="dataset id")
    p.set_defaults(func=cmd_delete)
