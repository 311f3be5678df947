"""Could gan_core's EMA be torch.optim.swa_utils.AveragedModel? Measured, not assumed.

Trains a small DCGAN-style ring8 spec with batch norm in G (so G has buffers) and EMA on, and
feeds every generator update to an AveragedModel (``get_ema_multi_avg_fn``, buffers averaged or
not) beside gan_core's EMA. Prints, per variant:

* the largest difference from gan_core's EMA after 1 update and after all of them (0 = identical);
* whether an AveragedModel saved half-way and loaded into a fresh one ends bit-identical to one
  that never stopped (the resume gan_core's checkpoints promise);
* whether its state dict loads into a plain Generator (what final/generator.pt needs).

    python bench/ema_averaged_model.py [--steps 60]
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":  # what may be missing, checked before it is imported
    from bench.prerequisites import Needs

    Needs("bench/ema_averaged_model.py").python("torch", "numpy").check()

import torch  # noqa: E402

from gan_core.data import DataConfig  # noqa: E402
from gan_core.spec import JobSpec  # noqa: E402
from gan_core.trainer import Callbacks, Trainer  # noqa: E402

SPEC = {"name": "ema-check", "dataset": {"name": "ring8"},
        "model": {"arch": "mlp", "latent_dim": 8, "hidden_g": [32, 32], "hidden_d": [32], "ema_decay": 0.9,
                  "g_batchnorm": True},
        "train": {"steps": 60, "batch_size": 32, "seed": 0},
        "log_every": 1000, "sample_every": 100000, "checkpoint_every": 100000, "eval": {"at_end": False}}


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa if sa[k].is_floating_point())


def inner(averaged) -> torch.nn.Module:
    return averaged.module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    try:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    except ImportError:
        sys.exit(f"torch {torch.__version__} has no torch.optim.swa_utils.get_ema_multi_avg_fn (needs torch >= 2.1)")
    doc = copy.deepcopy(SPEC)
    doc["train"]["steps"] = args.steps
    try:
        spec = JobSpec.model_validate(doc)
    except ValueError as exc:  # the spec's model fields moved: say so rather than a traceback
        sys.exit(f"bench/ema_averaged_model.py: its spec no longer validates: {exc}")
    trainer = Trainer(spec, data_config=DataConfig(), callbacks=Callbacks(), device="cpu")
    ema, G = trainer.state.ema, trainer.state.generator
    if ema is None:
        sys.exit("the spec trains without EMA")
    decay = spec.model.ema_decay
    variants = {f"AveragedModel(use_buffers={flag})": AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                                                     use_buffers=flag) for flag in (False, True)}
    half = args.steps // 2
    resumed: dict[str, object] = {}
    first: dict[str, float] = {}
    original_update = ema.update

    def update(generator: torch.nn.Module) -> None:  # every EMA update of the real loop, mirrored
        original_update(generator)
        for name, averaged in variants.items():
            averaged.update_parameters(generator)
            if name in resumed:
                resumed[name].update_parameters(generator)
            if name not in first:
                first[name] = max_diff(inner(averaged), ema.module)
        if trainer.state.step + 1 == half:  # save half-way, load into a fresh AveragedModel
            for name, averaged in variants.items():
                buffer = io.BytesIO()
                torch.save(averaged.state_dict(), buffer)
                fresh = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers="True" in name)
                fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
                resumed[name] = fresh

    ema.update = update
    trainer.run()
    print(f"torch {torch.__version__}, {args.steps} steps, ema_decay {decay}, G with batch norm")
    for name, averaged in variants.items():
        try:
            copy.deepcopy(G).load_state_dict(averaged.state_dict())
            plain = "yes"
        except RuntimeError as exc:
            plain = f"no ({str(exc).splitlines()[0][:70]}...)"
        same_resume = max_diff(inner(resumed[name]), inner(averaged)) == 0.0 and torch.equal(
            resumed[name].n_averaged, averaged.n_averaged)
        print(f"{name}: max |diff| from gan_core's EMA after 1 update {first[name]:.3g}, "
              f"after {args.steps}: {max_diff(inner(averaged), ema.module):.3g}; "
              f"bit-exact resume of itself: {same_resume}; state dict loads into a plain G: {plain}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
