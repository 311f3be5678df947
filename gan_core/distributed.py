"""Data-parallel training over the processes torch's launcher starts (``torch.distributed.run``).

One job runs as N ranks (one per device). The rules that make N ranks train exactly like one
process at the same global batch:

* every rank draws the *global* batch from the spec's streams (real indices, noise, labels, the
  gradient penalty's mixing weights), exactly as one process does, and keeps its slice
  (:meth:`Parallel.local`): the streams' state, and so a checkpoint, does not depend on N;
* G and D are wrapped in separate ``DistributedDataParallel`` modules, so each update averages the
  ranks' gradients: the gradient of the global batch's mean loss;
* batch statistics are taken over the global batch: batch norm through ``SyncBatchNorm`` (CUDA)
  or :class:`CPUSyncBatchNorm` (gloo: torch's SyncBatchNorm refuses CPU tensors), and the
  discriminator's minibatch standard deviation through :func:`global_moments`;
* rank 0 alone talks to the outside (metrics, artifacts, the lease); what it decides (stop, the
  checkpoint to resume from) reaches the others through :meth:`Parallel.share` on a gloo
  "control" group whose timeout is long, because the others wait there while rank 0 evaluates or
  uploads. The training group has its own, shorter timeout: a collective that cannot complete
  (a rank hung) fails instead of hanging forever; a rank that *dies* is noticed sooner by the
  launcher, which ends the whole group.

Importing this module does nothing; it uses no service code.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import io
import logging
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a training collective may wait for the other ranks (GANFORGE_DIST_TIMEOUT overrides).
DEFAULT_TRAIN_TIMEOUT = timedelta(minutes=10)
# How long the other ranks wait for rank 0's decisions: it may be evaluating (training the domain
# classifier first) or waiting for the artifact store (GANFORGE_DIST_CONTROL_TIMEOUT overrides).
DEFAULT_CONTROL_TIMEOUT = timedelta(hours=2)


class RankZeroError(RuntimeError):
    """Raised on the other ranks when what rank 0 was sharing failed there (rank 0 handles it)."""


@dataclass
class Parallel:
    """This process's place in the job: rank, world size, and the groups it talks through.

    ``Parallel()`` is the single-process case: every method is then a no-op or an identity.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    control: Any = None  # the gloo group of share() and stop decisions (None: single process)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_size(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise ValueError(f"the batch {global_batch} does not split over {self.world_size} ranks")
        return global_batch // self.world_size

    def local(self, x: Tensor | None) -> Tensor | None:
        """This rank's contiguous slice of a global batch (dimension 0)."""
        if x is None or not self.enabled:
            return x
        size = self.local_size(x.shape[0])
        return x[self.rank * size:(self.rank + 1) * size]

    def mean(self, x: Tensor) -> Tensor:
        """The mean of ``x`` over the ranks (on every rank), for statistics; x is not changed."""
        if not self.enabled:
            return x
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)  # gloo has no AVG
        return out.div_(self.world_size)

    def share(self, make: Callable[[], T] | None) -> T:
        """``make()`` on rank 0, its result on every rank (any picklable value; tensors as bytes).
        The other ranks pass anything (None): only rank 0 calls it.

        If ``make`` raises on rank 0, rank 0 raises it and every other rank raises RankZeroError:
        no rank is left waiting."""
        if not self.enabled:
            return make()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box = [("ok", make())]
            except Exception as exc:
                box = [("error", exc)]
        dist.broadcast_object_list(box, src=0, group=self.control)
        kind, value = box[0]
        if kind == "error":
            if self.is_main:
                raise value
            raise RankZeroError(f"{type(value).__name__}: {value}")
        return value

    def decide_stop(self, stop: bool) -> bool:
        """Rank 0's stop decision, on every rank (called at the top of every step)."""
        if not self.enabled:
            return stop
        flag = torch.tensor([1 if (stop and self.is_main) else 0], dtype=torch.int32)
        dist.broadcast(flag, src=0, group=self.control)
        return bool(flag.item())

    def no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager:
        """DDP's no_sync for a forward whose backward belongs to a later, synced forward."""
        if isinstance(module, nn.parallel.DistributedDataParallel):
            return module.no_sync()
        return contextlib.nullcontext()


SINGLE = Parallel()


def launched() -> bool:
    """True in a process started by torch's launcher (it sets WORLD_SIZE, RANK, LOCAL_RANK)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("WORLD_SIZE" in os.environ and "RANK" in os.environ)


def _seconds(name: str, default: timedelta) -> timedelta:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return timedelta(seconds=float(raw))
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None


def device_for(requested: str, local_rank: int) -> torch.device:
    """The device of a rank: cuda:LOCAL_RANK, or the CPU."""
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("the spec asks for device 'cuda' but no CUDA device is available")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_from_env(device: torch.device) -> Parallel:
    """Join the process group the launcher set up (env:// rendezvous): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world == 1:
        return Parallel(local_rank=local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=_seconds("GANFORGE_DIST_TIMEOUT", DEFAULT_TRAIN_TIMEOUT), **kwargs)
    control = dist.new_group(backend="gloo", timeout=_seconds("GANFORGE_DIST_CONTROL_TIMEOUT", DEFAULT_CONTROL_TIMEOUT))
    # The differentiable all_reduce of global_moments is the public one; its deprecation notice
    # (pointing at a private module) would fill every rank's log.
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated")
    log.info("rank %d of %d (local %d) on %s, backend %s", rank, world, local_rank, device, backend)
    return Parallel(rank=rank, world_size=world, local_rank=local_rank, control=control)


def shutdown(parallel: Parallel | None = None) -> None:
    """Leave the process group; with ``parallel``, once every rank has got here (a rank leaving
    while another still works can abort gloo's transport)."""
    if dist.is_initialized():
        if parallel is not None and parallel.enabled:
            dist.barrier(group=parallel.control)
        dist.destroy_process_group()


# ---- batch statistics over the global batch ---------------------------------------------------

_SYNC: contextvars.ContextVar[Parallel] = contextvars.ContextVar("ganforge_sync_statistics", default=SINGLE)


@contextlib.contextmanager
def sync_statistics(parallel: Parallel) -> Iterator[None]:
    """Within this block (the training step) batch statistics are global. Outside it (rank 0
    alone sampling or evaluating) nothing communicates, so nothing can wait for absent ranks."""
    token = _SYNC.set(parallel)
    try:
        yield
    finally:
        _SYNC.reset(token)


def global_moments(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor, int]:
    """Mean and biased variance of ``x`` over ``dims`` and over every rank's slice (the global
    batch), differentiable; and the global count. Two passes (mean, then squared deviations), as
    numerically careful as a one-process variance. Local when not inside ``sync_statistics``."""
    parallel = _SYNC.get()
    count = 1
    for d in dims:
        count *= x.shape[d]
    if not parallel.enabled:
        return x.mean(dim=dims), x.var(dim=dims, unbiased=False), count
    from torch.distributed.nn.functional import all_reduce  # differentiable all-reduce

    total = count * parallel.world_size  # slices are equal by construction (Parallel.local)
    mean = all_reduce(x.sum(dim=dims), op=dist.ReduceOp.SUM) / total
    shape = [1] * x.dim()
    for d in range(x.dim()):
        if d not in dims:
            shape[d] = x.shape[d]
    deviation = x - mean.reshape(shape)
    var = all_reduce(deviation.pow(2).sum(dim=dims), op=dist.ReduceOp.SUM) / total
    return mean, var, total


class CPUSyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics span the global batch, for gloo (CPU) jobs.

    Same parameters and buffers as BatchNorm1d/2d (checkpoints load into either); in eval mode,
    or outside ``sync_statistics``, it is plain batch norm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and _SYNC.get().enabled):
            return super().forward(input)
        dims = (0,) + tuple(range(2, input.dim()))
        mean, var, count = global_moments(input, dims)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * count / max(count - 1, 1), m)  # unbiased, as BatchNorm
        shape = (1, -1) + (1,) * (input.dim() - 2)
        out = (input - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in module.modules())


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer of ``module`` with global statistics; the parameters and buffers are
    the very same tensors (optimizers built before stay valid)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, _BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


def wrap(module: nn.Module, parallel: Parallel, device: torch.device, synced_bn: bool) -> nn.Module:
    """``module`` in DistributedDataParallel (itself when single-process).

    Buffers: with synchronised batch norm (or none) every rank's buffers are equal by
    construction, so broadcasting them each forward would be wasted work; with per-rank batch
    norm rank 0's running statistics are broadcast, so every rank samples alike.
    """
    if not parallel.enabled:
        return module
    broadcast = has_batchnorm(module) and not synced_bn
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.13 renamed broadcast_buffers to forward_sync_buffers (same meaning after init).
    name = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
    return ddp(module, device_ids=ids, **{name: broadcast})


def checkpoint_bytes(checkpoint: dict[str, Any] | None) -> bytes | None:
    """A checkpoint as bytes for share() (torch.save; loaded back with weights_only)."""
    if checkpoint is None:
        return None
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()
