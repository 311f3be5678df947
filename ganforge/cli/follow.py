"""Following a job from the command line: a progress bar until it ends, then its results."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from gan_core.cli import CLIError, read_spec
from ganforge.client import APIError

TERMINAL = ("succeeded", "failed", "cancelled")


def wait(client, job_id: str, show_progress: bool, alive=lambda: None) -> dict[str, Any]:
    """Poll until the job ends; ``alive()`` may raise CLIError (e.g. the local worker died)."""
    from tqdm import tqdm

    job = client.job(job_id)
    bar = tqdm(total=job["progress"]["total"], unit="step", disable=not show_progress, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)
    try:
        while True:
            alive()
            job = client.job(job_id)
            bar.update(job["progress"]["step"] - bar.n)
            metrics = job.get("latest_metrics") or {}
            if metrics:
                bar.set_postfix(status=job["status"], loss_d=f"{metrics.get('loss_d', 0):.3f}", loss_g=f"{metrics.get('loss_g', 0):.3f}", refresh=False)
            else:
                bar.set_postfix(status=job["status"], refresh=False)
            if job["status"] in TERMINAL:
                return job
            time.sleep(1.0)
    finally:
        bar.close()


def submit_and_wait(client, spec_path: str, show_progress: bool, json_out: bool, fetch_to: Path | None = None,
                    alive=lambda: None) -> int:
    spec = read_spec(spec_path)
    try:
        job = client.submit(spec.model_dump(mode="json"))
        print(f"submitted job {job['id']} ({spec.name})", flush=True)
        job = wait(client, job["id"], show_progress, alive)
    except APIError as exc:
        raise CLIError(exc.describe()) from None
    print(f"job {job['id']} {job['status']}" + (f": {job['error']}" if job.get("error") else ""))
    if job["status"] == "succeeded":
        print_results(client, job, fetch_to)
    return 0 if job["status"] == "succeeded" else 1


def print_results(client, job: dict[str, Any], fetch_to: Path | None) -> None:
    samples = client.samples(job["id"])["items"]
    checkpoints = client.checkpoints(job["id"])
    print(f"  sample grids: {len(samples)}, latest {samples[-1]['url'] if samples else '-'}")
    final = checkpoints.get("final")
    if final:
        print(f"  final generator: {final['url']}")
    if job.get("evaluation"):
        print(f"  evaluation: {json.dumps({k: v for k, v in job['evaluation'].items() if not isinstance(v, (list, dict))})}")
    if fetch_to is not None:
        fetch_to.mkdir(parents=True, exist_ok=True)
        for item in samples:
            (fetch_to / f"step-{item['step']:06d}.png").write_bytes(client.download(item["url"]))
        if final:
            (fetch_to / "generator.pt").write_bytes(client.download(final["url"]))
        print(f"  downloaded to {fetch_to}/")
