"""Following a job from the command line: a progress bar until it ends, then a short summary."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from gan_core.cli import CLIError, read_spec
from ganforge.client import jsonable

TERMINAL = ("succeeded", "failed", "cancelled")


def spec_for_submit(ref: str) -> dict[str, Any]:
    """The spec document to POST: a spec file or a preset's name, checked here first (each field
    at fault named)."""
    from ganforge.cli.presets import resolve

    return read_spec(resolve(ref)).model_dump(mode="json")


def detached(job_id: str) -> CLIError:
    """Ctrl-C while following: the job is on the service and goes on without us."""
    return CLIError(f"stopped following job {job_id}; it keeps running on the service. Follow it again with "
                    f"`ganforge wait {job_id}`, read its log with `ganforge logs {job_id} --follow`, or stop it with "
                    f"`ganforge cancel {job_id}`", 130, {"id": job_id, "keeps_running": True})


class Progress:
    """The bar over a job's training steps, on stderr.

    It starts counting when the job runs (a queued job shows its status), moves with the step
    each heartbeat reports, and closes when training reaches the last step: the final
    evaluation and uploads that follow are shown as a status line, outside its elapsed time
    and rate.
    """

    def __init__(self, job: dict[str, Any], show: bool):
        from tqdm import tqdm

        self.total = job["progress"]["total"]
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=self.total, unit="step", disable=not show, file=sys.stderr, dynamic_ncols=True,
                        mininterval=0.5 if self.tty else 30, desc=job["status"])
        self.show = show
        self.running = False
        self.closed = False
        self.train_seconds: float | None = None
        self.started_at: float | None = None
        self.first_step = 0

    def update(self, job: dict[str, Any]) -> None:
        if self.closed:
            return
        step, status = job["progress"]["step"], job["status"]
        if status == "running" and not self.running:
            # The clock starts now (time in the queue is not training); a resumed job starts mid-way.
            self.running = True
            self.started_at = time.monotonic()
            self.first_step = step
            self.bar.reset(self.total)
            self.bar.n = self.bar.last_print_n = step
        self.bar.set_description_str(status, refresh=False)
        metrics = job.get("latest_metrics") or {}
        losses = {k: f"{metrics[k]:.3f}" for k in ("loss_d", "loss_g") if isinstance(metrics.get(k), (int, float))}
        self.bar.set_postfix(losses, refresh=False)
        self.bar.update(max(0, step - self.bar.n))
        if self.tty:  # a terminal shows the status at once; a log file gets a line per mininterval
            self.bar.refresh()
        if step >= self.total or status in TERMINAL:
            self.close()
            if status not in TERMINAL and self.show:
                print("training done; final evaluation and uploads...", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.started_at is not None and self.bar.n > self.first_step:
            self.train_seconds = time.monotonic() - self.started_at
        self.bar.close()


def follow(client, job_id: str, show_progress: bool, alive=lambda: None, interval: float = 1.0) -> dict[str, Any]:
    """Poll until the job ends and return its last view; ``alive()`` may raise CLIError (e.g. the
    local worker died); Ctrl-C propagates (KeyboardInterrupt)."""
    from ganforge.cli.client_commands import _call

    job = _call(client.job, job_id)
    progress = Progress(job, show_progress)
    try:
        while True:
            alive()
            job = _call(client.job, job_id)
            progress.update(job)
            if job["status"] in TERMINAL:
                return job
            time.sleep(interval)
    finally:
        progress.close()


def submit_and_wait(client, spec_ref: str, show_progress: bool, json_out: bool, fetch_to: Path | None = None,
                    alive=lambda: None, detach_on_interrupt: bool = True) -> int:
    """Submit, follow and summarise. Ctrl-C leaves the job running and says how to follow it
    (``detach_on_interrupt``; ``up --submit`` stops everything instead)."""
    from ganforge.cli.client_commands import _call

    doc = spec_for_submit(spec_ref)
    job = _call(client.submit, doc)
    print(f"submitted job {job['id']} ({doc.get('name')})", file=sys.stderr if json_out else sys.stdout, flush=True)
    try:
        job = follow(client, job["id"], show_progress, alive)
    except KeyboardInterrupt:
        if not detach_on_interrupt:
            raise
        raise detached(job["id"]) from None
    if json_out:
        print(json.dumps(job, indent=2, default=jsonable))
    else:
        print_summary(client, job, fetch_to)
    return 0 if job["status"] == "succeeded" else 1


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def summary_rows(job: dict[str, Any], samples: list[dict[str, Any]], final: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The end of a followed job as (label, value) rows: no raw JSON, no signed URLs."""
    p = job["progress"]
    rows = [("job", f"{job['id']} ({job['name']})"), ("status", job["status"] + (f": {job['error']}" if job.get("error") else ""))]
    training = f"{p['step']} / {p['total']}"
    speed = (job.get("latest_metrics") or {}).get("steps_per_s")
    if isinstance(speed, (int, float)):
        training += f", {speed:.1f} steps/s while training"
    if job.get("runtime_seconds"):
        training += f" ({job['runtime_seconds']:.1f} s on the worker, evaluation included)"
    rows.append(("steps", training))
    if job.get("attempts", 1) > 1:
        rows.append(("attempts", str(job["attempts"])))
    evaluation = {k: v for k, v in (job.get("evaluation") or {}).items() if not isinstance(v, (list, dict))}
    if evaluation:
        rows.append(("evaluation", ", ".join(f"{k} {_number(v)}" for k, v in evaluation.items())))
    if samples:
        rows.append(("sample grids", f"{len(samples)} (steps {samples[0]['step']}..{samples[-1]['step']}): "
                                     f"ganforge samples {job['id']} --out DIR"))
    if final:
        rows.append(("generator", f"ganforge generate {job['id']} --out samples.png"))
    return rows


def format_table(rows: list[tuple[str, str]], width: int | None = None) -> str:
    import shutil

    width = width or shutil.get_terminal_size((100, 24)).columns
    label_width = max(len(label) for label, _ in rows)
    lines = []
    for label, value in rows:
        wrapped = textwrap.wrap(value, width=max(40, width - label_width - 4)) or [""]
        lines.append(f"  {label:<{label_width}}  {wrapped[0]}")
        lines += [f"  {'':<{label_width}}  {more}" for more in wrapped[1:]]
    return "\n".join(lines)


def print_summary(client, job: dict[str, Any], fetch_to: Path | None = None) -> None:
    from ganforge.cli.client_commands import _call

    samples = _call(client.samples, job["id"])["items"]
    final = _call(client.checkpoints, job["id"]).get("final")
    print(format_table(summary_rows(job, samples, final)))
    if fetch_to is not None:
        fetch_to.mkdir(parents=True, exist_ok=True)
        for item in samples:
            (fetch_to / f"step-{item['step']:06d}.png").write_bytes(_call(client.download, item["url"]))
        if final:
            (fetch_to / "generator.pt").write_bytes(_call(client.download, final["url"]))
        print(f"  downloaded to {fetch_to}/")
