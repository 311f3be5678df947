"""Mode coverage and sample quality of the mode-collapse presets over many seeds.

    python bench/quality.py                                  # ring8 and grid25, tuning seeds 0-9 and unseen 100-109
    python bench/quality.py --datasets ring8 --seeds 0-2     # a quicker look: one seed set, seeds 0, 1, 2
    python bench/quality.py --steps 2000 --workers 1 --out quality.json
    python bench/quality.py --datasets stacked-mnist --seeds 0 --steps 300 --workers 1   # short CPU look
    python bench/quality.py --images                         # presets/best-mnist.json, seeds 0-2, domain FID
    python bench/quality.py --images --preset best-mnist classic-mlp-mnist --seeds 0-2 --threads 2 --workers 1
    python bench/quality.py --stacked-run runs/stacked-short  # the figures of a `ganforge train` run

Stacked MNIST (``presets/stacked-mnist-pacgan.json``: DCGAN + pack 2, PacGAN's setting) is scored
as its jobs are: 26 000 samples, each channel read by the MNIST domain classifier, modes covered
out of 1000 and KL(p_G || uniform) over them, plus the domain FID, KID and coverage of the three
channels' features. Target: >= 990 modes and KL <= 0.1 (published, PacGAN: DCGAN 99 modes,
PacDCGAN2 1000 modes / KL 0.08). It trains for hours on a 2-core CPU (a GPU run is what the preset
is for); ``--stacked-run DIR`` prints the figures of a finished ``ganforge train`` run directory
(its ``evaluation.json``) without training again.

For each dataset the preset ``presets/<dataset>-quality.json`` is trained once per seed
(``train.seed`` = 0..N-1, everything else as in the preset) with the library's own Trainer, and
evaluated exactly as a job is: 2500 samples from the network the job ships (the EMA generator when
``model.ema_decay`` is set), scored by ``gan_core.quality.evaluate_mixture`` (VEEGAN/PacGAN
convention: a sample is high quality (HQ) within 3 sigma of its nearest mode, a mode is captured
with at least one HQ sample; ``modes_min10`` asks for 10). ``spread`` is the RMS distance of the
HQ samples from their mode over the data's own (1.0: modes as wide as the data's; well below 1:
modes shrunk towards their centres, which HQ alone would reward). A preset with
``sampling.rejection`` (grid25) is scored, as its jobs are, on the samples discriminator rejection
sampling keeps; the raw generator's modes and HQ and the share kept are printed beside them.

Targets (a seed passes when every mode is captured and HQ >= 97 %):
ring8 8/8 in 10/10 seeds, grid25 25/25 in 9/10 seeds. Published reference for grid25:
PacGAN4 24.8 modes / 93.6 % HQ (Lin et al., 2018, Table 3).

Seeds (``--seeds``): each argument is one seed set, reported in its own table: ``0-9`` (a range,
both ends included), ``100,103`` or ``7``. The 2-D presets were tuned on seeds 0-9, so the default
reports them beside the unseen seeds 100-109: a preset must hold on seeds nobody tuned it on.

Images (``--images``): each preset of ``--preset`` (default ``best-mnist``; names of files in
``presets/``) is trained once per seed and scored as a job is, on ``--samples`` samples (default
10 000) from the network the job ships: domain FID, classes covered, confidence, KID, precision /
recall / coverage of the domain classifier (``gan_core.quality.evaluate_images``). The summary gives
the mean domain FID over the seeds and its ratio to the classic recipe's on the same dataset: when
``classic-mlp-mnist`` is among ``--preset`` it is trained on every dataset the other presets use
(``classic-mlp-mnist@fashion-mnist``: the classic recipe on Fashion-MNIST) and its measured mean is
used, else the recorded 3-seed mean on MNIST (``CLASSIC_RECORDED``, bench/README.md). Target: at most a fifth of the classic's, with 10/10 classes on every seed. Needs
the MNIST files (``. scripts/env``).

Each training run uses ``--threads`` torch threads (default 1); ``--workers`` runs (default 2) train
in parallel processes; ``--device cuda`` trains them on the GPU (they share it). A preset's CPU budget is stated for one run alone on 2 cores: time it with
``--workers 1 --threads 2`` on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.prerequisites import Needs  # noqa: E402
from ganforge.resources import preset_names, preset_text, presets_dir  # noqa: E402

# (modes required, HQ % required, seeds that must pass out of 10)
TARGETS: dict[str, tuple[int, float, int]] = {"ring8": (8, 97.0, 10), "grid25": (25, 97.0, 9)}
PUBLISHED = {"grid25": "PacGAN4 (Lin et al. 2018): 24.8 modes, 93.6 % HQ"}
STACKED = "stacked-mnist"
STACKED_TARGET = (990, 0.1)  # modes at least, reverse KL at most
STACKED_PUBLISHED = "PacGAN (Lin et al. 2018): DCGAN 99 modes; PacDCGAN2 1000 modes, KL 0.08"
# The 2-D presets' tuning seeds and seeds none of them was tuned on (issue 16): both are reported.
DEFAULT_SEED_SETS = ("0-9", "100-109")
IMAGE_SEED_SETS = ("0-2",)
CLASSIC = "classic-mlp-mnist"
# The classic preset's mean domain FID over seeds 0 1 2 (12 000 steps, 10 000 samples), as
# `python bench/reference.py --seeds 0 1 2` printed it (bench/README.md); image presets are judged
# against it when the classic is not trained in the same run. Other datasets have no recorded
# figure: the classic recipe is trained on them in the same run (the classic with that dataset).
CLASSIC_RECORDED = {"mnist": 98.01}
IMAGE_TARGET_RATIO = 0.2  # a strong image preset: domain FID at most a fifth of the classic's


def preset_path(dataset: str) -> Path:
    if dataset == STACKED:
        return presets_dir() / "stacked-mnist-pacgan.json"
    return presets_dir() / f"{dataset}-quality.json"


def parse_seed_set(text: str) -> list[int]:
    """``"0-9"`` -> 0..9 (both ends included), ``"100,103"`` -> [100, 103], ``"7"`` -> [7]."""
    seeds: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if sep else low
        except ValueError:
            raise argparse.ArgumentTypeError(f"a seed set is like 0-9, 100,103 or 7, not {text!r}") from None
        if low < 0 or high < low:
            raise argparse.ArgumentTypeError(f"seed range {part!r}: need 0 <= first <= last")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seed set {text!r} repeats a seed")
    return seeds


def seed_set(text: str) -> tuple[str, list[int]]:
    """An argument of ``--seeds``: the set as written (its tables' title) and its seeds."""
    return text, parse_seed_set(text)


def mixture_spec_doc(dataset: str, seed: int, steps: int | None, device: str, overrides: dict[str, Any]) -> dict:
    """The spec a 2-D (or stacked-MNIST) run trains: the dataset's preset with ``--set``, this seed;
    only the final evaluation, no sample grids or checkpoints along the way."""
    from bench.reference import merge

    doc = merge(json.loads(preset_path(dataset).read_text()), overrides)
    doc["train"] = {**doc.get("train", {}), "seed": seed}
    if steps is not None:
        doc["train"]["steps"] = steps
    doc.update(device=device, sample_every=10**9, checkpoint_every=10**9, log_every=10**9, eval_every=None)
    doc["eval"] = {**doc.get("eval", {}), "at_end": True}
    return doc


def run_one(job: tuple[str, int, int | None, int, str, dict[str, Any]]) -> dict[str, Any]:
    """Train the dataset's preset with one seed and evaluate it (runs in a worker process)."""
    import torch

    from gan_core.cli import data_config_from_env
    from gan_core.spec import JobSpec
    from gan_core.trainer import Trainer

    dataset, seed, steps, threads, device, overrides = job
    torch.set_num_threads(threads)
    spec = JobSpec.model_validate(mixture_spec_doc(dataset, seed, steps, device, overrides))
    start = time.perf_counter()
    result = Trainer(spec, data_config=data_config_from_env()).run()  # stacked-mnist: the MNIST files
    seconds = time.perf_counter() - start
    ev = result.evaluation or {}
    return {
        "dataset": dataset,
        "seed": seed,
        "steps": spec.train.steps,
        "modes": ev.get("modes", 0),
        "n_modes": ev.get("n_modes"),
        "modes_min10": ev.get("modes_min10", 0),
        "hq_percent": ev.get("hq_percent", 0.0),
        "reverse_kl": ev.get("reverse_kl"),
        "hq_spread": ev.get("hq_spread"),
        "mode_counts": ev.get("mode_counts"),
        # With sampling.rejection the figures above are for the kept samples; the raw generator's here.
        "raw_modes": (ev.get("raw") or {}).get("modes"),
        "raw_hq_percent": (ev.get("raw") or {}).get("hq_percent"),
        "acceptance": (ev.get("rejection") or {}).get("acceptance"),
        **{key: ev.get(key) for key in ("domain_fid", "kid", "kid_std", "precision", "recall", "coverage")},
        "error": ev.get("error"),
        "seconds": round(seconds, 1),
    }


def image_spec_doc(preset: str, seed: int, overrides: dict[str, Any], samples: int,
                   device: str = "cpu") -> dict[str, Any]:
    """The spec an image run trains: the preset, the overrides, this seed; scored after run() (as
    a job's final evaluation is) so that training is timed alone."""
    from bench.reference import merge

    doc = merge(json.loads(preset_text(preset)), overrides)
    doc = merge(doc, {"train": {"seed": seed}, "eval": {"at_end": False, "n_samples": samples}})
    doc.update(device=device, sample_every=10**9, checkpoint_every=10**9, log_every=10**9, eval_every=None)
    return doc


def run_image(job: tuple[str, dict[str, Any], int]) -> dict[str, Any]:
    """Train an image spec and score the generator it ships (runs in a worker process)."""
    import torch

    from gan_core.cli import data_config_from_env
    from gan_core.spec import JobSpec
    from gan_core.trainer import Trainer

    preset, doc, threads = job
    torch.set_num_threads(threads)
    spec = JobSpec.model_validate(doc)
    dataset = spec.dataset.name
    trainer = Trainer(spec, data_config=data_config_from_env())
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    ev = trainer.evaluate()
    return {
        "preset": preset, "dataset": dataset, "seed": spec.train.seed, "steps": spec.train.steps,
        "threads": threads, "device": str(trainer.device),
        **{key: ev.get(key) for key in ("domain_fid", "classes_covered", "mean_confidence", "kid", "kid_std",
                                        "precision", "recall", "density", "coverage", "error")},
        "train_seconds": round(seconds, 1),
        "ms_per_step": round(1000 * seconds / spec.train.steps, 1),
    }


def image_report(preset: str, seeds_label: str, rows: list[dict[str, Any]], classic_fid: float | None,
                 classic_source: str) -> dict[str, Any]:
    """Print one preset's table over one seed set and return its summary."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    where = rows[0]["device"] if rows[0]["device"] != "cpu" else f"{rows[0]['threads']} CPU thread(s) a run"
    print(f"\n{preset}  (presets/{preset.split('@')[0]}.json on {rows[0]['dataset']}, {rows[0]['steps']} steps, seeds {seeds_label}, "
          f"{where})")
    print(f"{'seed':>5} {'dFID':>8} {'classes':>7} {'conf':>6} {'KID':>8} {'prec':>6} {'recall':>6} {'cover':>6} "
          f"{'train s':>8} {'ms/step':>8}")
    for row in rows:
        print(f"{row['seed']:>5} {fmt(row['domain_fid'], '.2f'):>8} {fmt(row['classes_covered'], 'd'):>7} "
              f"{fmt(row['mean_confidence'], '.3f'):>6} {fmt(row['kid'], '.4f'):>8} {fmt(row['precision'], '.3f'):>6} "
              f"{fmt(row['recall'], '.3f'):>6} {fmt(row['coverage'], '.3f'):>6} {row['train_seconds']:>8.0f} "
              f"{row['ms_per_step']:>8.1f}" + (f"  error: {row['error']}" if row.get("error") else ""))
    fids = [r["domain_fid"] for r in rows if r["domain_fid"] is not None]
    mean_fid = statistics.mean(fids) if len(fids) == len(rows) else None
    min_classes = min((r["classes_covered"] or 0) for r in rows)
    summary = {
        "preset": preset, "dataset": rows[0]["dataset"], "device": rows[0]["device"], "seeds": seeds_label, "runs": len(rows), "mean_domain_fid": mean_fid,
        "std_domain_fid": statistics.stdev(fids) if len(fids) > 1 else None,
        "min_classes_covered": min_classes, "mean_train_seconds": statistics.mean(r["train_seconds"] for r in rows),
        "classic_domain_fid": classic_fid, "classic_source": classic_source,
    }
    if mean_fid is None:
        print("mean: - (a run failed)")
        summary["target_met"] = False
        return summary
    if classic_fid is None:
        print(f"mean domain FID {mean_fid:.2f}; no classic figure to compare with ({classic_source})")
        summary["target_met"] = None
        return summary
    ratio = mean_fid / classic_fid
    summary["ratio_to_classic"] = ratio
    summary["target_met"] = ratio <= IMAGE_TARGET_RATIO and min_classes == 10
    std = fmt(summary["std_domain_fid"], ".2f")
    print(f"mean domain FID {mean_fid:.2f} (std {std}), classes >= {min_classes}/10 on every seed, "
          f"mean {summary['mean_train_seconds']:.0f} s training")
    if not preset.startswith(CLASSIC):
        print(f"ratio to the classic preset's {classic_fid:.2f} ({classic_source}): {ratio:.3f}; target <= "
              f"{IMAGE_TARGET_RATIO} with 10/10 classes -> {'MET' if summary['target_met'] else 'NOT met'}")
    return summary


def check_spec(doc: dict[str, Any], source: str) -> None:
    """Validate a run's spec before anything trains: a bad ``--set`` is a message naming ``source``
    (the preset file) and the field, not a traceback."""
    from pydantic import ValidationError

    from gan_core.spec import JobSpec, error_details

    try:
        JobSpec.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{item['field']}: {item['problem']}" for item in error_details(exc))
        raise SystemExit(f"bench/quality.py: {source} with the overrides: {problems}") from None


def image_jobs(args: argparse.Namespace, presets: list[str], seeds: list[int]) -> list[tuple[str, dict, int]]:
    """One job per preset and seed; every spec validated here, so a bad ``--set`` is a message
    naming the field before anything trains. The overrides and ``--steps`` leave the classic as it is.
    With the classic among ``presets`` it is trained on every dataset the other presets use (named
    ``classic-mlp-mnist`` on MNIST, ``classic-mlp-mnist@fashion-mnist`` on another), so each preset
    is judged against the classic recipe on its own data."""
    from bench.reference import parse_set

    overrides = parse_set(args.overrides)
    if args.steps is not None:
        overrides = {**overrides, "train": {**overrides.get("train", {}), "steps": args.steps}}
    runs: list[tuple[str, str, dict[str, Any]]] = []  # (name, preset file, its overrides)
    others = [p for p in presets if p != CLASSIC]
    if CLASSIC in presets:
        datasets = ["mnist", *sorted({json.loads(preset_text(p))["dataset"]["name"] for p in others} - {"mnist"})]
        runs += [(CLASSIC if d == "mnist" else f"{CLASSIC}@{d}", CLASSIC, {} if d == "mnist" else {"dataset": {"name": d}})
                 for d in datasets]
    runs += [(p, p, overrides) for p in others]
    jobs = []
    for name, preset, changes in runs:
        for seed in seeds:
            doc = image_spec_doc(preset, seed, changes, args.samples, args.device)
            check_spec(doc, f"presets/{preset}.json")
            jobs.append((name, doc, args.threads))
    return jobs


def mixture_jobs(args: argparse.Namespace, seeds: list[int]) -> list[tuple]:
    """One job per dataset and seed, each spec (the preset with ``--set``) validated first."""
    from bench.reference import parse_set

    overrides = parse_set(args.overrides)
    for dataset in args.datasets:
        check_spec(mixture_spec_doc(dataset, seeds[0], args.steps, args.device, overrides), preset_path(dataset).name)
    return [(dataset, seed, args.steps, args.threads, args.device, overrides) for dataset in args.datasets for seed in seeds]


def run_images(args: argparse.Namespace, seed_sets: list[tuple[str, list[int]]]) -> list[dict[str, Any]]:
    """Train and score ``--preset`` on every seed set; the classic first when it is listed."""
    all_jobs = {label: image_jobs(args, args.preset, seeds) for label, seeds in seed_sets}  # all checked first
    summaries = []
    for label, _ in seed_sets:
        rows = _map(run_image, all_jobs[label], args.workers)
        names = list(dict.fromkeys(r["preset"] for r in rows))  # job order: the classic runs first
        classic: dict[str, float] = {}  # dataset -> the classic's mean domain FID measured on it here
        for name in names:
            mine = [r for r in rows if r["preset"] == name]
            dataset = mine[0]["dataset"]
            if name.startswith(CLASSIC) and all(r["domain_fid"] is not None for r in mine):
                classic[dataset] = statistics.mean(r["domain_fid"] for r in mine)
            if dataset in classic:
                fid, source = classic[dataset], f"measured here on {dataset}, seeds {label}"
            elif dataset in CLASSIC_RECORDED:
                fid, source = CLASSIC_RECORDED[dataset], f"recorded on {dataset}, seeds 0-2, bench/README.md"
            else:
                fid, source = None, f"none recorded for {dataset}: add {CLASSIC} to --preset"
            summaries.append({**image_report(name, label, mine, fid, source), "rows": mine})
    return summaries


def _map(function, jobs: list, workers: int) -> list:
    if workers > 1 and len(jobs) > 1:
        # spawn: a fresh interpreter per worker, so no torch thread pool is inherited through fork.
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            return pool.map(function, jobs, chunksize=1)
    return [function(job) for job in jobs]


def stacked_report(rows: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """Print the stacked-MNIST table (modes out of 1000, KL, feature-space figures)."""
    modes_needed, kl_allowed = STACKED_TARGET
    print(f"\n{STACKED}  ({source})")
    print(f"{'seed':>4} {'steps':>6} {'modes':>6} {'rev KL':>7} {'dFID':>8} {'KID':>8} {'prec':>6} {'recall':>6} "
          f"{'cover':>6} {'sec':>7}  pass")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    passed = 0
    for row in rows:
        ok = row["modes"] >= modes_needed and row["reverse_kl"] is not None and row["reverse_kl"] <= kl_allowed
        passed += ok
        print(f"{row['seed']:>4} {row['steps']:>6} {row['modes']:>6} {fmt(row['reverse_kl'], '.3f'):>7} "
              f"{fmt(row.get('domain_fid'), '.2f'):>8} {fmt(row.get('kid'), '.4f'):>8} {fmt(row.get('precision'), '.3f'):>6} "
              f"{fmt(row.get('recall'), '.3f'):>6} {fmt(row.get('coverage'), '.3f'):>6} {fmt(row.get('seconds'), '.0f'):>7}  "
              f"{'yes' if ok else 'no'}")
    print(f"target: >= {modes_needed} modes of 1000 and KL <= {kl_allowed}: {passed}/{len(rows)} runs")
    print(f"published: {STACKED_PUBLISHED}")
    return {"dataset": STACKED, "runs": len(rows), "passed": passed,
            "mean_modes": statistics.mean(r["modes"] for r in rows)}


def stacked_run_row(run: Path) -> dict[str, Any]:
    """The figures of a finished `ganforge train` run directory of the stacked-MNIST preset."""
    if not (run / "spec.json").exists():
        raise SystemExit(f"{run}: not a run directory (no spec.json); make one with "
                         f"`ganforge train presets/stacked-mnist-pacgan.json --out {run}`")
    spec = json.loads((run / "spec.json").read_text())
    if spec["dataset"]["name"] != STACKED:
        raise SystemExit(f"{run}: a run of '{spec['dataset']['name']}', not {STACKED}")
    evaluation_file = run / "evaluation.json"
    if not evaluation_file.exists():
        raise SystemExit(f"{run}: no evaluation.json (the run has not finished, or eval.at_end is off)")
    ev = json.loads(evaluation_file.read_text())
    return {"seed": spec["train"]["seed"], "steps": spec["train"]["steps"], "modes": ev.get("modes", 0),
            "reverse_kl": ev.get("reverse_kl"), "seconds": None,
            **{key: ev.get(key) for key in ("domain_fid", "kid", "precision", "recall", "coverage")}}


def passes(row: dict[str, Any]) -> bool:
    modes, hq, _ = TARGETS[row["dataset"]]
    return row["modes"] >= modes and row["hq_percent"] >= hq


def report(dataset: str, rows: list[dict[str, Any]], seeds_label: str = "") -> dict[str, Any]:
    """Print one dataset's table over one seed set and return its summary."""
    modes_needed, hq_needed, seeds_needed = TARGETS[dataset]
    print(f"\n{dataset}  (preset {preset_path(dataset).relative_to(REPO)}, {rows[0]['steps']} steps"
          + (f", seeds {seeds_label})" if seeds_label else ")"))
    rejecting = any(r.get("raw_hq_percent") is not None for r in rows)
    if rejecting:
        print("figures for the samples discriminator rejection sampling keeps; 'raw': the generator's own")
    extra_head = f" {'raw modes':>9} {'raw HQ %':>8} {'kept':>6}" if rejecting else ""
    print(f"{'seed':>4} {'modes':>6} {'min10':>6} {'HQ %':>7} {'rev KL':>8} {'spread':>7}{extra_head} {'sec':>6}  pass")
    for row in rows:
        kl = "-" if row["reverse_kl"] is None else f"{row['reverse_kl']:.4f}"
        spread = "-" if row["hq_spread"] is None else f"{row['hq_spread']:.3f}"
        extra = ""
        if rejecting:
            raw_hq = "-" if row.get("raw_hq_percent") is None else f"{row['raw_hq_percent']:.2f}"
            kept = "-" if row.get("acceptance") is None else f"{row['acceptance']:.3f}"
            extra = f" {row.get('raw_modes') or '-':>9} {raw_hq:>8} {kept:>6}"
        print(
            f"{row['seed']:>4} {row['modes']:>6} {row['modes_min10']:>6} {row['hq_percent']:>7.2f} "
            f"{kl:>8} {spread:>7}{extra} {row['seconds']:>6.1f}  {'yes' if passes(row) else 'no'}"
        )
    kls = [r["reverse_kl"] for r in rows if r["reverse_kl"] is not None]
    spreads = [r["hq_spread"] for r in rows if r["hq_spread"] is not None]
    summary = {
        "dataset": dataset,
        "seed_set": seeds_label,
        "seeds": len(rows),
        "mean_modes": statistics.mean(r["modes"] for r in rows),
        "mean_modes_min10": statistics.mean(r["modes_min10"] for r in rows),
        "mean_hq_percent": statistics.mean(r["hq_percent"] for r in rows),
        "mean_reverse_kl": statistics.mean(kls) if kls else None,
        "mean_hq_spread": statistics.mean(spreads) if spreads else None,
        "mean_seconds": statistics.mean(r["seconds"] for r in rows),
        "passed": sum(passes(r) for r in rows),
    }
    if rejecting:
        summary["mean_raw_hq_percent"] = statistics.mean(r["raw_hq_percent"] or 0.0 for r in rows)
        summary["mean_acceptance"] = statistics.mean(r["acceptance"] or 0.0 for r in rows)
    kl = "-" if summary["mean_reverse_kl"] is None else f"{summary['mean_reverse_kl']:.4f}"
    spread = "-" if summary["mean_hq_spread"] is None else f"{summary['mean_hq_spread']:.3f}"
    print(
        f"mean {summary['mean_modes']:>6.2f} {summary['mean_modes_min10']:>6.2f} "
        f"{summary['mean_hq_percent']:>7.2f} {kl:>8} {spread:>7} {summary['mean_seconds']:>6.1f}"
    )
    if rejecting:
        print(f"raw generator: mean HQ {summary['mean_raw_hq_percent']:.2f} %; rejection kept "
              f"{summary['mean_acceptance']:.1%} of the candidates")
    # The target is stated for 10 seeds; with fewer, scale the number that must pass.
    required = -(-seeds_needed * len(rows) // 10)
    verdict = "MET" if summary["passed"] >= required else "NOT met"
    print(
        f"passed {summary['passed']}/{len(rows)} seeds ({modes_needed}/{modes_needed} modes and HQ >= "
        f"{hq_needed:.0f} %); target {seeds_needed}/10 -> {verdict}"
    )
    if dataset in PUBLISHED:
        print(f"published: {PUBLISHED[dataset]}")
    summary["target_met"] = summary["passed"] >= required
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(TARGETS), choices=[*TARGETS, STACKED],
                        help=f"default: the 2-D mixtures; {STACKED} trains for hours on a CPU")
    parser.add_argument("--stacked-run", type=Path, nargs="+", default=None, metavar="DIR",
                        help="print the stacked-MNIST figures of finished `ganforge train` run directories and stop")
    parser.add_argument("--images", action="store_true", help="train and score the image presets of --preset")
    parser.add_argument("--preset", nargs="+", default=["best-mnist"], metavar="NAME",
                        help="with --images: presets/NAME.json (default best-mnist); add classic-mlp-mnist to "
                             "measure the classic's FID in the same run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the presets trained (repeatable), e.g. train.lr_d=0.0004; "
                             "with --images every preset's but the classic's")
    parser.add_argument("--samples", type=int, default=10_000, help="with --images: samples scored (default 10 000)")
    parser.add_argument("--seeds", type=seed_set, nargs="+", default=None, metavar="SET",
                        help="seed sets, each reported in its own table: 0-9, 100,103 or 7 (default: "
                             f"{' '.join(DEFAULT_SEED_SETS)}; with --images {' '.join(IMAGE_SEED_SETS)})")
    parser.add_argument("--steps", type=int, default=None, help="override the presets' train.steps")
    parser.add_argument("--workers", type=int, default=2, help="training processes at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training process (default 1)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where each run trains (default cpu; cuda: the runs of --workers share the GPU)")
    parser.add_argument("--out", type=Path, default=None, help="write the per-seed rows and summaries as JSON")
    args = parser.parse_args()
    if args.images:
        for preset in args.preset:
            if preset not in preset_names():
                parser.error(f"--preset {preset}: no presets/{preset}.json")
    needs = Needs("bench/quality.py").python("torch", "numpy")
    if args.device == "cuda":
        needs = needs.cuda()
    (needs.mnist() if args.images else needs).check()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.stacked_run:
        stacked_report([stacked_run_row(run) for run in args.stacked_run], "from " + ", ".join(map(str, args.stacked_run)))
        return
    seed_sets = args.seeds or [seed_set(text) for text in (IMAGE_SEED_SETS if args.images else DEFAULT_SEED_SETS)]

    start = time.perf_counter()
    if args.images:
        summaries = run_images(args, seed_sets)
        rows = [row for summary in summaries for row in summary.pop("rows")]
    else:
        rows, summaries = [], []
        for label, seeds in seed_sets:
            jobs = mixture_jobs(args, seeds)
            mine = _map(run_one, jobs, args.workers)
            rows += mine
            summaries += [
                stacked_report([r for r in mine if r["dataset"] == d], f"preset {preset_path(d).relative_to(REPO)}")
                if d == STACKED else report(d, [r for r in mine if r["dataset"] == d], label)
                for d in args.datasets
            ]
    print(f"\ntotal {time.perf_counter() - start:.0f} s wall, {args.workers} worker(s) x {args.threads} thread(s)")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summaries": summaries}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
