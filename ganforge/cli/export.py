"""``ganforge export ID --tensorboard DIR``: a job's scalars and sample grids as TensorBoard event
files, written by torch's ``SummaryWriter`` (the ``tensorboard`` package: ``pip install
'ganforge[tensorboard]'``).

Each job becomes one run, ``DIR/<name>-<id8>``, so several jobs exported to one DIR sit side by
side in ``tensorboard --logdir DIR``. Every metric series is a scalar tag under its own name
(``loss_d``, ``eval/fid``, …) at its training step; each fixed-noise grid is an image under
``samples`` at its step; the spec (and tags, notes) is a text entry.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ganforge.responses import bundle_filename
from gan_core.cli import CLIError
from ganforge.cli.client_commands import _call, _client, _out, add_client_options

EXAMPLES = """examples:
  ganforge export 3f2a...e9 --tensorboard runs/tb
  tensorboard --logdir runs/tb                      # one run per exported job
"""
INSTALL = ("`ganforge export --tensorboard` writes with the tensorboard package, which is not installed: "
           "pip install 'ganforge[tensorboard]' (or pip install tensorboard)")


def summary_writer():
    """torch's SummaryWriter class; CLIError saying what to install when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when `import tensorboard` fails (or is too old)
        raise CLIError(INSTALL) from None
    return SummaryWriter


def export_tensorboard(client, job_id: str, directory: Path) -> dict[str, Any]:
    """Write the job's run under ``directory``; what was written (run folder, counts)."""
    writer_class = summary_writer()
    job = client.job(job_id)
    series = client.metrics(job.id).series
    grids = client.samples(job.id).items
    run = directory / bundle_filename(job.name, job.id).removesuffix(".zip")
    scalars = 0
    with writer_class(log_dir=str(run)) as writer:
        for name, points in sorted(series.items()):
            for step, value in zip(points.steps, points.values):
                if value is not None:  # a non-finite value the API sends as null
                    writer.add_scalar(name, value, step)
                    scalars += 1
        for grid in grids:
            with Image.open(io.BytesIO(client.download(grid.url))) as image:
                pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
            writer.add_image("samples", pixels, grid.step, dataformats="HWC")
        labels = {"tags": job.tags, "notes": job.notes} if (job.tags or job.notes) else {}
        writer.add_text("spec", "```json\n" + json.dumps({**job.spec, **labels}, indent=2) + "\n```", 0)
    return {"run": str(run), "job": job.id, "status": job.status, "series": len(series), "scalars": scalars,
            "images": len(grids)}


def cmd_export(args: argparse.Namespace) -> int:
    directory = Path(args.tensorboard)
    if directory.exists() and not directory.is_dir():
        raise CLIError(f"--tensorboard {directory} is a file; give a folder")
    summary_writer()  # before anything is fetched: say what to install
    written = _call(export_tensorboard, _client(args), args.id, directory)
    _out(args, written, f"job {written['job']} ({written['status']}): {written['scalars']} scalars of "
         f"{written['series']} series and {written['images']} sample grids in {written['run']}/\n"
         f"  tensorboard --logdir {directory}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a job's scalars and sample grids for TensorBoard",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("id", help="the job's id")
    p.add_argument("--tensorboard", required=True, metavar="DIR",
                   help="folder of TensorBoard runs; the job's run is DIR/<name>-<id8> (made if missing)")
    add_client_options(p)
    p.set_defaults(func=cmd_export)
