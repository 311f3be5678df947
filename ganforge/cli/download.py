"""``ganforge download ID --out DIR``: the whole job (GET /v1/jobs/{id}/bundle) into a folder:
job.json, spec.json, metrics.csv, metrics.jsonl, samples/step-*.png, generator.pt, evaluation."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path, PurePosixPath

from ganforge.responses import bundle_filename
from gan_core.cli import CLIError
from ganforge.cli.client_commands import _call, _client, _out, add_client_options

EXAMPLES = """examples:
  ganforge download 3f2a...e9 --out runs/ring8          # unpacked: spec.json, metrics.csv, samples/, ...
  ganforge download 3f2a...e9 --out runs/ --zip         # the archive as it comes: runs/<name>-3f2a...zip
"""


def _extract(archive: Path, out: Path) -> list[str]:
    with zipfile.ZipFile(archive) as bundle:
        names = bundle.namelist()
        for name in names:  # the service names its members, but a zip is never trusted with paths
            parts = PurePosixPath(name).parts
            if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
                raise CLIError(f"the bundle holds an unsafe path {name!r}; nothing was unpacked")
        bundle.extractall(out)
    return names


def cmd_download(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a folder")
    if not args.zip and out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise CLIError(f"--out {out} is not empty; give an empty or new folder, or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    client = _client(args)
    job = _call(client.job, args.id)  # a wrong id is "job not found" before anything is written
    archive = out / (bundle_filename(job.name, job.id) if args.zip else ".bundle.zip")
    _call(client.download_bundle, job.id, archive)
    if args.zip:
        _out(args, {"file": str(archive), "bytes": archive.stat().st_size}, f"wrote {archive}")
        return 0
    try:
        names = _extract(archive, out)
    except zipfile.BadZipFile as exc:
        raise CLIError(f"the bundle of job {job.id} is not a whole zip ({exc}); try again") from None
    finally:
        archive.unlink(missing_ok=True)
    files = [name for name in names if not name.endswith("/")]
    summary = {"dir": str(out), "job": job.id, "status": job.status, "files": files}
    _out(args, summary, f"job {job.id} ({job.status}): {len(files)} files in {out}/\n"
         + "\n".join(f"  {name}" for name in files if not name.startswith("samples/"))
         + (f"\n  samples/ ({sum(n.startswith('samples/') for n in files)} grids)" if any(
             n.startswith("samples/") for n in files) else ""))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download a whole job (spec, metrics, grids, generator, evaluation)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("id", help="the job's id")
    p.add_argument("--out", required=True, help="folder to unpack into (made if missing; must be empty)")
    p.add_argument("--zip", action="store_true", help="keep the zip archive as it comes instead of unpacking it")
    p.add_argument("--overwrite", action="store_true", help="unpack into a folder that is not empty")
    add_client_options(p)
    p.set_defaults(func=cmd_download)
