"""gan_core's own command line: train, generate, validate, schema — no server needed.

``python -m gan_core.cli`` runs it (the multi-device launcher starts each rank so); the
``ganforge`` command adds the service's and the client's commands to the same parser
(``add_commands``) and runs it with ``run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pydantic import ValidationError

from gan_core.spec import JobSpec, error_details, json_schema, load_spec

if TYPE_CHECKING:
    from gan_core.data import DataConfig

log = logging.getLogger("ganforge")


class CLIError(Exception):
    """A user-facing failure: printed as one message, exit status ``code``; with ``--json``,
    ``{"error": {"message", "exit_code", **data}}`` on stdout instead."""

    def __init__(self, message: str, code: int = 1, data: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.data = dict(data or {})

    def as_json(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "exit_code": self.code, **self.data}}


class UsageError(CLIError):
    """A command line argparse rejects (exit status 2), with the usage of the command at fault."""

    def __init__(self, message: str, usage: str, prog: str):
        super().__init__(message, 2)
        self.usage = usage
        self.prog = prog


def add_command(sub: argparse._SubParsersAction, name: str, help: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """A sub-command whose --help says what it does and ends with examples."""
    import textwrap

    description = textwrap.fill(help[0].upper() + help[1:] + ".", width=88)  # the raw formatter does not wrap
    return sub.add_parser(name, help=help, description=description,
                          epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


class CLIParser(argparse.ArgumentParser):
    """argparse, except that a bad command line raises UsageError instead of printing and
    exiting, so ``run`` can answer in JSON when ``--json`` was asked for."""

    def error(self, message: str):
        raise UsageError(message, self.format_usage(), self.prog)


def read_spec(path: str, steps: int | None = None, devices: int | None = None) -> JobSpec:
    """Read and validate a spec file (``steps`` / ``devices`` override train.steps /
    resources.devices); errors list each field at fault on its own line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CLIError(f"{path}: cannot read spec ({exc.strerror})", 2) from None
    try:
        spec = load_spec(text)
        if steps is not None or devices is not None:
            doc = spec.model_dump(mode="json")
            if steps is not None:
                doc["train"]["steps"] = steps
            if devices is not None:
                doc["resources"]["devices"] = devices
            spec = JobSpec.model_validate(doc)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            lines = [f"  {d['field']}: {d['problem']}" for d in error_details(exc)]
            raise CLIError(f"{path}: invalid spec\n" + "\n".join(lines), 2) from None
        raise CLIError(f"{path}: {exc}", 2) from None
    return spec


def data_config_from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> "DataConfig":
    """Where a local run finds datasets: GANFORGE_DATA_DIR, GANFORGE_CACHE_DIR and
    GANFORGE_DATASET_MIRRORS (JSON such as ``{"mnist": ["http://127.0.0.1:8000/mnist/"]}``);
    keyword arguments win over the environment.

    The one place gan_core reads these variables, for its own command line (``ganforge train``
    works without the service, and the library never reads the environment). The service reads
    the same names through ganforge.jobs.settings.Settings and hands gan_core ``Settings.data_config()``.
    """
    from gan_core.data import DataConfig, DataError  # torch: only when a command trains

    env = os.environ if env is None else env
    kwargs: dict[str, Any] = {}
    if value := env.get("GANFORGE_DATA_DIR"):
        kwargs["data_dir"] = Path(value)
    if value := env.get("GANFORGE_CACHE_DIR"):
        kwargs["cache_dir"] = Path(value)
    if value := env.get("GANFORGE_DATASET_MIRRORS"):
        try:
            kwargs["mirrors"] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"GANFORGE_DATASET_MIRRORS is not valid JSON: {exc}") from exc
    return DataConfig(**{**kwargs, **overrides})


# ---- train -------------------------------------------------------------------------------
class RunDirectory:
    """The files of a local run: metrics.jsonl, samples/, checkpoints/, final/, evaluation.json."""

    # Everything a run writes (what --overwrite removes; nothing else in the folder is touched).
    OUTPUTS = ("samples", "checkpoints", "final", "metrics.jsonl", "evaluations.jsonl", "evaluation.json",
               "spec.json", "loss_plot.png", "interpolation.png")

    @classmethod
    def check_fresh(cls, root: Path, resume: bool, overwrite: bool) -> None:
        """A new run (no --resume) starts in an empty folder, or --overwrite removes the last
        run's files first: two runs' metrics, grids and checkpoints never mix."""
        import shutil

        if resume and overwrite:
            raise CLIError("--resume continues the run in --out, --overwrite replaces it: pick one", 2)
        if resume or not root.is_dir() or not any(root.iterdir()):
            if root.exists() and not root.is_dir():
                raise CLIError(f"--out {root}: exists and is not a folder", 2)
            return
        if not overwrite:
            raise CLIError(f"--out {root} is not empty: add --resume to continue the run in it, --overwrite to "
                           "replace it, or choose a new folder", 2)
        for name in cls.OUTPUTS:
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    def __init__(self, root: Path):
        self.root = root
        self.samples = root / "samples"
        self.checkpoints = root / "checkpoints"
        self.final = root / "final"
        self.metrics = root / "metrics.jsonl"
        for folder in (self.samples, self.checkpoints, self.final):
            folder.mkdir(parents=True, exist_ok=True)

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.checkpoints.glob("step-*.pt"), key=lambda p: _step_of(p))
        return found[-1] if found else None

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines past a resumed checkpoint so the series has no duplicate step."""
        if not self.metrics.exists():
            return
        kept = [line for line in self.metrics.read_text().splitlines() if line and json.loads(line)["step"] <= after_step]
        self.metrics.write_text("".join(line + "\n" for line in kept))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line]


def _step_of(path: Path) -> int:
    match = re.search(r"step-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def _launch_train(args: argparse.Namespace) -> int:
    """``ganforge train --devices N``: the same command on N ranks through torch's launcher."""
    import tempfile

    from gan_core.launch import Launch, torchrun_argv, wait_for

    forwarded = [args.spec, "--out", args.out, "--devices", str(args.devices)]
    for flag, value in (("--steps", args.steps), ("--data-dir", args.data_dir), ("--device", args.device)):
        if value is not None:
            forwarded += [flag, str(value)]
    forwarded += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite),
                                        ("--quiet", args.quiet)) if on]
    argv = torchrun_argv(args.devices, "gan_core.cli", ["train", *forwarded], nnodes=args.nnodes,
                         rdzv_endpoint=args.rdzv_endpoint, rdzv_id=args.rdzv_id, shutdown_timeout=30)
    stop_file = Path(tempfile.gettempdir()) / f"ganforge-stop-{os.getpid()}"
    launch = Launch(argv, stop_file=stop_file).start()
    interrupts = {"count": 0}

    def on_sigint(signum, frame):  # first Ctrl-C: rank 0 stops at the end of the step and saves
        interrupts["count"] += 1
        if interrupts["count"] == 1:
            print("stopping at the end of this step (Ctrl-C again to kill)...", file=sys.stderr)
            launch.request_stop()
        else:
            launch.kill()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        code = wait_for(launch)
    finally:
        signal.signal(signal.SIGINT, previous)
        launch.close()
    if interrupts["count"]:
        return 130  # rank 0 saved a checkpoint and said how to resume
    if code != 0:
        raise CLIError(f"training on {args.devices} devices x {args.nnodes} host(s) failed (launcher exit code {code}); "
                       "see the ranks' messages above")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from gan_core import distributed
    from gan_core.launch import die_with_parent

    if (args.devices > 1 or args.nnodes > 1) and not distributed.launched():
        if args.devices < 1 or args.nnodes < 1:
            raise CLIError("--devices and --nnodes must be at least 1", 2)
        read_spec(args.spec, args.steps, args.devices)  # a bad spec fails here, once
        RunDirectory.check_fresh(Path(args.out), args.resume, args.overwrite)  # and a used --out
        return _launch_train(args)
    if not distributed.launched():
        return _train_here(args, distributed.SINGLE, args.device)
    die_with_parent()
    spec = read_spec(args.spec, args.steps, args.devices)
    device = distributed.device_for(args.device or spec.device, int(os.environ.get("LOCAL_RANK", "0")))
    parallel = distributed.init_from_env(device)
    code = _train_here(args, parallel, str(device))
    distributed.shutdown(parallel)
    return code


def _train_here(args: argparse.Namespace, parallel, device: str | None) -> int:
    """Train in this process: the whole job, or one rank of it (rank 0 writes every file)."""
    from tqdm import tqdm

    from gan_core import checkpoint as ckpt
    from gan_core import images
    from gan_core.data import DataError
    from gan_core.launch import stop_requested
    from gan_core.sampling import interpolation_png
    from gan_core.trainer import Callbacks, NonFiniteLossError, Trainer

    main = parallel.is_main
    spec = read_spec(args.spec, args.steps, getattr(args, "devices", 1))
    if spec.train.batch_size % parallel.world_size:
        raise CLIError(f"train.batch_size {spec.train.batch_size} does not split over {parallel.world_size} ranks", 2)
    if main:
        RunDirectory.check_fresh(Path(args.out), args.resume, args.overwrite)
    run = RunDirectory(Path(args.out)) if main else None

    def load_resume() -> bytes | None:
        latest = run.latest_checkpoint()
        if latest is None:
            raise CLIError(f"--resume: no checkpoint in {run.checkpoints}")
        return latest.read_bytes()

    # Rank 0 reads the checkpoint; every rank resumes from the same bytes.
    resume_bytes = parallel.share(load_resume) if args.resume else None
    resume = None
    if resume_bytes is not None:
        try:
            resume = ckpt.load(resume_bytes, expect=ckpt.TRAINING_FORMAT)
        except ckpt.CheckpointError as exc:
            raise CLIError(str(exc)) from None
        if main:
            run.truncate_metrics(int(resume["step"]))
    if main:
        (run.root / "spec.json").write_text(spec.model_dump_json(indent=2) + "\n")

    overrides = {"data_dir": Path(args.data_dir)} if args.data_dir else {}
    interrupted = {"flag": False}
    bar = tqdm(total=spec.train.steps, unit="step", dynamic_ncols=True, disable=args.quiet or not main, file=sys.stderr)

    class LocalRun(Callbacks):
        def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
            with run.metrics.open("a") as handle:
                handle.write(json.dumps({"step": step, **metrics}) + "\n")
            bar.set_postfix(loss_d=f"{metrics['loss_d']:.3f}", loss_g=f"{metrics['loss_g']:.3f}", acc_d=f"{metrics['acc_d']:.2f}")
            bar.update(step - bar.n)

        def on_samples(self, step: int, png: bytes) -> None:
            (run.samples / f"step-{step:06d}.png").write_bytes(png)

        def on_checkpoint(self, step: int, checkpoint: dict[str, Any]) -> None:
            ckpt.save(checkpoint, run.checkpoints / f"step-{step:06d}.pt")

        def on_evaluation(self, step: int, results: dict[str, Any]) -> None:
            with (run.root / "evaluations.jsonl").open("a") as handle:
                handle.write(json.dumps({"step": step, **results}) + "\n")

        def should_stop(self) -> bool:
            return interrupted["flag"] or stop_requested()

    def on_sigint(signum, frame):  # first Ctrl-C: stop at the end of the step and save
        interrupted["flag"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    callbacks = LocalRun() if main else Callbacks()
    try:
        trainer = Trainer(spec, data_config=data_config_from_env(**overrides), callbacks=callbacks, resume_from=resume,
                          device=device, parallel=parallel)
        bar.update(trainer.state.step)
        result = trainer.run()
    except (DataError, ckpt.CheckpointError) as exc:
        raise CLIError(str(exc)) from None
    except NonFiniteLossError as exc:
        raise CLIError(f"training diverged: {exc}; lower the learning rates or resume from an earlier checkpoint") from None
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()

    if not main:
        return 0
    if result.stopped:
        callbacks.on_checkpoint(result.step, trainer.checkpoint())
        print(f"interrupted at step {result.step}; checkpoint saved. Continue with: ganforge train {args.spec} --out {args.out} --resume")
        return 130
    ckpt.save(trainer.generator_file(), run.final / "generator.pt")
    series = _loss_series(run.read_metrics())
    (run.root / "loss_plot.png").write_bytes(images.line_plot_png(series, title=f"{spec.name}: losses and D accuracy"))
    (run.root / "interpolation.png").write_bytes(interpolation_png(trainer.generator_file()))
    if result.evaluation is not None:
        (run.root / "evaluation.json").write_text(json.dumps(result.evaluation, indent=2) + "\n")
    where = "" if parallel.world_size == 1 else f" on {parallel.world_size} ranks"
    print(f"done: {result.step} steps{where}")
    print(f"  sample grids:    {run.samples}/ ({len(list(run.samples.glob('*.png')))} PNG)")
    print(f"  checkpoints:     {run.checkpoints}/")
    print(f"  final generator: {run.final / 'generator.pt'}")
    print(f"  loss plot:       {run.root / 'loss_plot.png'}")
    print(f"  interpolation:   {run.root / 'interpolation.png'}")
    if result.evaluation is not None:
        print(f"  evaluation:      {json.dumps(_headline(result.evaluation))}")
        if (line := _distribution_line(result.evaluation)) is not None:
            print(f"  vs real data:    {line}")
        raw, rejection = result.evaluation.get("raw"), result.evaluation.get("rejection")
        if isinstance(raw, dict) and isinstance(rejection, dict) and "acceptance" in rejection:
            print(f"  raw generator:   {json.dumps(_headline(raw))} "
                  f"(the figures above: the {rejection['acceptance']:.1%} of its samples rejection sampling kept)")
    return 0


def _loss_series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    keys = ("loss_d", "loss_g", "acc_d")
    return {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}


def _distribution_line(evaluation: dict[str, Any]) -> str | None:
    """KID and precision / recall / density / coverage in words, when the evaluation has them."""
    parts = []
    if isinstance(evaluation.get("kid"), (int, float)):
        parts.append(f"KID {evaluation['kid']:.4f} ± {evaluation.get('kid_std', float('nan')):.4f}")
    parts += [f"{name} {evaluation[name]:.3f}" for name in ("precision", "recall", "density", "coverage")
              if isinstance(evaluation.get(name), (int, float))]
    return ", ".join(parts) if parts else None


def _headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in evaluation.items() if not isinstance(v, (list, dict))}


# ---- generate ------------------------------------------------------------------------------
def parse_labels(text: str | None) -> list[int] | int | None:
    if text is None:
        return None
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CLIError(f"--labels: expected integers like 3 or 0,1,2, got {text!r}", 2) from None
    return values[0] if len(values) == 1 else values


OUTPUT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".npy": "npy"}


def output_format(out: Path) -> str:
    """What ``generate --out`` writes, from its extension; checked (with its folder) before any work."""
    fmt = OUTPUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise CLIError(f"--out {out}: the extension sets the format: .png (a grid), .jpg or .jpeg (the grid as "
                       "JPEG) or .npy (the samples as float32)", 2)
    if not out.parent.is_dir():
        raise CLIError(f"--out {out}: the folder {out.parent} does not exist; create it first", 2)
    return fmt


def cmd_generate(args: argparse.Namespace) -> int:
    import numpy as np

    from gan_core import checkpoint as ckpt
    from gan_core import images
    from gan_core.rejection import RejectionError
    from gan_core.sampling import generate, samples_png

    out = Path(args.out)
    fmt = output_format(out)
    try:
        samples = generate(args.checkpoint, args.n, seed=args.seed, labels=parse_labels(args.labels),
                           device=args.device, rejection=not args.no_rejection)
    except (ckpt.CheckpointError, RejectionError) as exc:
        raise CLIError(str(exc)) from None
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None
    if fmt == "npy":
        np.save(out, samples.astype(np.float32), allow_pickle=False)
    else:
        png = samples_png(samples, nrow=args.nrow)
        out.write_bytes(images.png_to_jpeg(png) if fmt == "jpeg" else png)
    print(f"wrote {len(samples)} samples {tuple(samples.shape[1:])} to {out}")
    return 0


CLASSIFIER_DATASETS = ("mnist", "fashion-mnist", "cifar10")


def cmd_classifier_train(args: argparse.Namespace) -> int:
    """Train (or find cached) the domain classifier the evaluation scores a dataset with."""
    from gan_core.data import DataError
    from gan_core.evaluator import classifier_for
    from gan_core.spec import DatasetSpec

    if args.dataset not in CLASSIFIER_DATASETS:
        raise CLIError(f"classifier train: no built-in classifier for '{args.dataset}' "
                       f"(one of {', '.join(CLASSIFIER_DATASETS)}; stacked-mnist uses mnist's)", 2)
    overrides: dict[str, Any] = {"data_dir": Path(args.data_dir)} if args.data_dir else {}
    if args.cache_dir:
        overrides["cache_dir"] = Path(args.cache_dir)
    config = data_config_from_env(**overrides)
    try:
        _, meta = classifier_for(DatasetSpec(name=args.dataset), config)
    except DataError as exc:
        raise CLIError(str(exc)) from None
    print(f"{args.dataset}: domain classifier test accuracy {meta['test_accuracy']:.4f} "
          f"({meta['epochs']} epochs, seed {meta['seed']}, {meta['n_train']} training images; "
          f"trained in {meta['train_seconds']} s)")
    print(f"  cached under {config.cache_dir / 'classifiers'} (fingerprint {meta['fingerprint']})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    spec = read_spec(args.spec)
    print(f"{args.spec}: valid spec '{spec.name}'")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    data_dir_help = "folder with one sub-folder per dataset (default: $GANFORGE_DATA_DIR)"
    p = add_command(sub, "train", "train a GAN locally from a spec, no server needed; Ctrl-C saves a checkpoint",
                    ["ganforge train ring8 --out runs/ring8", "ganforge train runs/my-spec.json --out runs/mine --resume",
                     "ganforge train classic-mlp-mnist --out runs/classic --steps 500 --overwrite"])
    p.add_argument("spec", help="job spec JSON file")
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, samples/, checkpoints/, final/); a new "
                   "run needs an empty or missing folder")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="--out holds an earlier run: delete its files first (without --resume or --overwrite, "
                   "a non-empty --out is refused)")
    p.add_argument("--data-dir", help=data_dir_help)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the spec's device")
    p.add_argument("--devices", type=int, default=1,
                   help="train data-parallel on N devices of this host (N GPUs, or N CPU processes with gloo) "
                   "through torch's launcher; train.batch_size stays the global batch")
    p.add_argument("--nnodes", type=int, default=1, help="hosts taking part (each runs this command with --devices)")
    p.add_argument("--rdzv-endpoint", help="several hosts: HOST:PORT of the c10d rendezvous (e.g. the first host)")
    p.add_argument("--rdzv-id", help="several hosts: a run id shared by all of them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = add_command(sub, "generate", "sample from a checkpoint or final generator file (or, through the service, "
                    "from a job id)", ["ganforge generate runs/ring8/final/generator.pt --n 64 --out ring.png",
                                       "ganforge generate runs/mnist/final/generator.pt --labels 7 --out sevens.jpg",
                                       "ganforge generate 3f2a... --n 16 --out samples.npy"])
    p.add_argument("checkpoint", help="a checkpoint or final generator file (.pt)")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same samples (default 0)")
    p.add_argument("--labels", help="class for every sample (3) or one per sample (0,1,2,...)")
    p.add_argument("--nrow", type=int, help="images per row in a grid")
    p.add_argument("--device", default="cpu", help="torch device to sample on (default cpu)")
    p.add_argument("--out", required=True, help="FILE.png or FILE.jpg (a grid) or FILE.npy (float32 samples); its "
                   "folder must exist")
    p.add_argument("--no-rejection", action="store_true",
                   help="the raw generator's samples, also when the spec asks for sampling.rejection")
    p.set_defaults(func=cmd_generate)

    p = add_command(sub, "classifier", "the domain classifier that evaluations score images with",
                    ["ganforge classifier train mnist"])
    classifier = p.add_subparsers(dest="classifier_command", required=True, metavar="{train}")
    p = add_command(classifier, "train", "train it for a built-in dataset (seed 0, 2 epochs) into the cache that "
                    "evaluations read; a cached one is reused", ["ganforge classifier train fashion-mnist"])
    p.add_argument("dataset", help="mnist, fashion-mnist or cifar10 (stacked-mnist is scored with mnist's)")
    p.add_argument("--data-dir", help=data_dir_help)
    p.add_argument("--cache-dir", help="default: $GANFORGE_CACHE_DIR or ~/.cache/ganforge/datasets")
    p.set_defaults(func=cmd_classifier_train)

    p = add_command(sub, "validate", "check a spec file; each field at fault is named",
                    ["ganforge validate my-spec.json"])
    p.add_argument("spec", help="job spec JSON file")
    p.set_defaults(func=cmd_validate)

    p = add_command(sub, "schema", "print the job spec's JSON Schema", ["ganforge schema > spec.schema.json"])
    p.set_defaults(func=cmd_schema)


def build_parser() -> argparse.ArgumentParser:
    parser = CLIParser(prog="ganforge", description="GAN training, locally or as a service")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command: a CLIError is one message on stderr and its exit code
    (with ``--json``: a JSON object on stdout); Ctrl-C ends with 130 and no traceback; a reader
    that stops early (``ganforge list --json | head``) ends it quietly."""
    try:
        return _run(parser, list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more. stdout points at /dev/null so that
        # the interpreter's own flush at exit does not raise (and print) the same error again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, what a tool killed by SIGPIPE reports


def _run(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    json_out = "--json" in argv
    try:
        try:
            args = parser.parse_args(argv)
        except UsageError as exc:
            if json_out:
                raise
            sys.stderr.write(exc.usage)
            print(f"{exc.prog}: error: {exc}", file=sys.stderr)
            return exc.code
        json_out = bool(getattr(args, "json", False))
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        try:
            return args.func(args)
        except KeyboardInterrupt:
            raise CLIError("interrupted", 130) from None
    except CLIError as exc:
        if json_out:
            print(json.dumps(exc.as_json(), indent=2), flush=True)
        else:
            print(f"ganforge: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
