"""Run by torch's launcher from test_distributed.py: the D update's gradients (with WGAN-GP's
penalty, packing and minibatch std) under DDP against one process on the whole global batch.

Every rank computes its slice's loss through the real ``train_step`` pieces; rank 0 also computes
the one-process loss on the global batch with an unwrapped copy of D and writes the largest
difference of any gradient to the file named on the command line.
"""

import copy
import json
import sys

import torch

from gan_core import distributed, losses
from gan_core.models import build_discriminator
from gan_core.spec import JobSpec


def d_loss(D, real, fake, alpha, spec):
    real_logits, _ = D(real, None)
    fake_logits, _ = D(fake, None)
    gp = losses.gradient_penalty(D, real, fake, None, alpha=alpha)
    return losses.d_loss(spec.loss, real_logits, fake_logits) + spec.train.gp_weight * gp


def main(out: str) -> None:
    spec = JobSpec.model_validate({
        "name": "gp", "dataset": {"name": "mnist", "image_size": 32}, "loss": "wgan-gp",
        "model": {"arch": "dcgan", "ndf": 8, "ngf": 8, "pack": 2, "minibatch_std": True},
        "train": {"batch_size": 16}, "resources": {"devices": 2},
    })
    device = torch.device("cpu")
    par = distributed.init_from_env(device)
    torch.manual_seed(0)
    D = build_discriminator(spec.model, (1, 32, 32), None, spec.loss)
    reference = copy.deepcopy(D)
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(16, 1, 32, 32, generator=gen) * 2 - 1
    fake = torch.rand(16, 1, 32, 32, generator=gen) * 2 - 1
    alpha = torch.rand(16, 1, 1, 1, generator=gen)

    ddp = distributed.wrap(D, par, device, synced_bn=True)
    with distributed.sync_statistics(par):
        with par.no_sync(ddp):
            real_logits, _ = ddp(par.local(real), None)
            fake_logits, _ = ddp(par.local(fake), None)
        gp = losses.gradient_penalty(ddp, par.local(real), par.local(fake), None, alpha=par.local(alpha))
        loss = losses.d_loss(spec.loss, real_logits, fake_logits) + spec.train.gp_weight * gp
        loss.backward()
    if par.is_main:
        d_loss(reference, real, fake, alpha, spec).backward()
        worst = max(float((p.grad - q.grad).abs().max() / (q.grad.abs().max() + 1e-12))
                    for p, q in zip(D.parameters(), reference.parameters(), strict=True))
        norm = max(float(q.grad.abs().max()) for q in reference.parameters())
        with open(out, "w") as handle:
            json.dump({"max_relative_difference": worst, "max_gradient": norm}, handle)
    distributed.shutdown(par)


if __name__ == "__main__":
    main(sys.argv[1])
