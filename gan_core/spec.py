"""The job spec: one pydantic model shared by the API, the CLI and the worker.

Limits that a deployment may tighten (maximum steps, batch size, evaluation size) are read from
the validation context, so the service passes its own settings without gan_core knowing them::

    JobSpec.model_validate(doc, context={"max_steps": 50_000})
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Sequence, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Defaults for the limits a deployment may override through the validation context.
DEFAULT_LIMITS: dict[str, int] = {
    "max_steps": 1_000_000,
    "max_batch_size": 4096,
    "max_eval_samples": 50_000,
    "max_devices": 8,
}

IMAGE_DATASETS = ("mnist", "fashion-mnist", "stacked-mnist", "cifar10", "npz", "image_folder")
POINT_DATASETS = ("ring8", "grid25")
# Native shape (C, H, W) of the built-in image datasets; npz data is only known once loaded.
NATIVE_IMAGE_SHAPE = {
    "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "stacked-mnist": (3, 28, 28), "cifar10": (3, 32, 32),
}
DCGAN_IMAGE_SIZES = (28, 32, 64, 128)
FOLDER_IMAGE_SIZES = (32, 64, 128)  # image_folder: every picture is resized and centre-cropped to one
# Datasets whose path is a URI the service fetches (s3://, https://) or, embedded, a server path.
PATH_DATASETS = ("npz", "image_folder")

DatasetName = Literal["mnist", "fashion-mnist", "stacked-mnist", "cifar10", "ring8", "grid25", "npz", "image_folder"]
STACKED_MNIST_EVAL_SAMPLES = 26_000  # the standard protocol of the 1000-mode benchmark
Loss = Literal["minimax", "bce", "lsgan", "wgan-gp", "hinge"]


def _field_error(field: str, problem: str) -> ValueError:
    """An error from a cross-field check, naming the field at fault (see error_details)."""
    return ValueError(f"{field}: {problem}")


_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_.]*): (.+)$", re.DOTALL)


def _limit(info: ValidationInfo, key: str) -> int:
    context = info.context or {}
    return int(context.get(key, DEFAULT_LIMITS[key]))


def _within(field: str, limit_key: str, what: str):
    """A validator of ``field``: at most the deployment's ``limit_key`` (validation context)."""

    def check(cls, value: int, info: ValidationInfo) -> int:
        limit = _limit(info, limit_key)
        if value > limit:
            raise ValueError(f"at most {limit} {what} are allowed here")
        return value

    return field_validator(field)(classmethod(check))


class _Strict(BaseModel):
    # Unknown fields are an error: a typo must never be silently ignored. No type coercion either
    # (strict): `"steps": true` is not 1 step and `"steps": "200"` is not a number. An integer
    # where a float is expected is still fine (JSON does not tell 1 from 1.0).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatasetSpec(_Strict):
    name: DatasetName
    path: str | None = Field(
        None,
        description="npz: the user's .npz file; image_folder: a zip or tar archive of PNG/JPEG/WebP images, or "
        "an S3 prefix ending in '/' holding them (URIs with the s3 or https scheme; server paths only where the "
        "deployment allows them)",
    )
    upload_id: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
        description="image_folder: the id of an archive uploaded with POST /v1/datasets (instead of path)",
    )
    image_size: int | None = Field(
        None, ge=8, le=128,
        description="resize images to this square size (default: native); image_folder: 32, 64 or 128 (required)",
    )
    channels: Literal[1, 3] | None = Field(
        None, description="npz: expected channels (checked when the file is loaded); image_folder: 3 (RGB, the "
        "default) or 1 (grayscale)",
    )
    labels: Literal["none", "folders"] | None = Field(
        None, description="image_folder: 'folders' makes each class sub-folder a label (for cgan/acgan); "
        "default 'none'",
    )
    limit: int | None = Field(None, ge=1, description="use only the first N training examples")

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_not_bool(cls, value: Any) -> Any:
        # A Literal of integers matches True as 1 even in strict mode.
        if isinstance(value, bool):
            raise ValueError("must be 1 or 3, not a boolean")
        return value

    @model_validator(mode="before")
    @classmethod
    def _folder_defaults(cls, data: Any) -> Any:
        # image_folder's defaults are written into the spec, so a stored spec says what was trained.
        if isinstance(data, dict) and data.get("name") == "image_folder":
            data = {"channels": 3, "labels": "none", **data}
        return data

    @model_validator(mode="after")
    def _path_only_for_npz(self) -> DatasetSpec:
        if self.name == "image_folder":
            return self._check_folder()
        if self.upload_id is not None:
            raise _field_error("upload_id", f"only the image_folder dataset takes an upload_id, not '{self.name}'")
        if self.labels is not None:
            raise _field_error("labels", f"only the image_folder dataset takes labels, not '{self.name}'")
        if self.name == "npz" and not self.path:
            raise _field_error("path", "the npz dataset needs the path of a .npz file holding 'x' (and 'y')")
        if self.name not in PATH_DATASETS and self.path is not None:
            raise _field_error("path", f"only the npz and image_folder datasets take a path, not '{self.name}'")
        if self.name in POINT_DATASETS and self.image_size is not None:
            raise _field_error("image_size", f"'{self.name}' is 2-D points; image_size does not apply")
        if self.channels is not None and self.name != "npz":
            native = NATIVE_IMAGE_SHAPE.get(self.name)
            if native is None or native[0] != self.channels:
                have = f"has {native[0]}" if native else "is 2-D points"
                raise _field_error("channels", f"'{self.name}' {have}; channels is checked for npz files only")
        return self

    def _check_folder(self) -> DatasetSpec:
        if (self.path is None) == (self.upload_id is None):
            raise _field_error(
                "path", "image_folder needs exactly one of path (an archive or s3:// prefix) and upload_id"
            )
        if self.image_size is None:
            raise _field_error("image_size", f"image_folder needs image_size, one of {FOLDER_IMAGE_SIZES}")
        if self.image_size not in FOLDER_IMAGE_SIZES:
            raise _field_error("image_size", f"image_folder makes images of size {FOLDER_IMAGE_SIZES}, not {self.image_size}")
        return self

    @property
    def is_image(self) -> bool:
        return self.name in IMAGE_DATASETS



class ModelSpec(_Strict):
    arch: Literal["mlp", "dcgan"] = "mlp"
    variant: Literal["radford", "keras"] = Field(
        "radford",
        description="dcgan only: 'radford' (pytorch/examples DCGAN) or 'keras' (the small "
        "Keras-tutorial DCGAN: Dense 7*7*128 -> ConvT 64 -> ConvT 1, 28x28)",
    )
    latent_dim: int = Field(100, ge=1, le=1024)
    latent_prior: Literal["normal", "mixture"] = Field(
        "normal",
        description="distribution of z: 'normal' N(0, I), or 'mixture': a uniform mixture of "
        "latent_components Gaussians with fixed random centres (DeLiGAN-style; lets G map separate "
        "latent clusters to separate modes)",
    )
    latent_components: int = Field(64, ge=2, le=4096, description="mixture prior: number of Gaussians")
    latent_component_std: float = Field(0.1, gt=0.0, le=1.0, description="mixture prior: each Gaussian's std")
    hidden_g: list[int] = Field(default_factory=lambda: [256, 512, 1024], min_length=1, max_length=8)
    hidden_d: list[int] = Field(default_factory=lambda: [512, 256], min_length=1, max_length=8)
    ngf: int = Field(64, ge=4, le=512)
    ndf: int = Field(64, ge=4, le=512)
    conditioning: Literal["none", "cgan", "acgan"] = "none"
    embed_dim: int | None = Field(None, ge=1, le=512, description="label embedding size (default: classes)")
    leaky_slope: float = Field(0.2, ge=0.0, lt=1.0)
    bn_momentum: float = Field(
        0.3, gt=0.0, le=1.0, description="PyTorch convention; 0.3 equals Keras' momentum 0.7"
    )
    bn_eps: float = Field(1e-3, gt=0.0, le=0.1, description="1e-3 as in Keras")
    g_batchnorm: bool = Field(
        True,
        description="mlp only: batch norm after each hidden layer of G (the classic Keras GAN); "
        "turn off for 2-D mixtures, where batch statistics couple the samples of a batch",
    )
    d_norm: Literal["auto", "batch", "layer", "none"] = Field(
        "auto",
        description="normalisation in the DCGAN discriminator; 'auto' = batch, or none with "
        "spectral norm, or layer norm for wgan-gp (a batch-dependent critic breaks the penalty)",
    )
    spectral_norm: bool = False
    minibatch_std: bool = False
    pack: int = Field(1, ge=1, le=8, description="PacGAN: the discriminator judges m samples at once")
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0, description="EMA of G's weights")

    @field_validator("hidden_g", "hidden_d")
    @classmethod
    def _positive_widths(cls, widths: list[int]) -> list[int]:
        if any(w < 1 or w > 8192 for w in widths):
            raise ValueError("every hidden width must be between 1 and 8192")
        return widths


# The GAN health detectors (gan_core.health), which are also the reasons a job stopped by one gives.
HEALTH_REASONS = ("diverged", "discriminator_won", "mode_collapse")


class HealthSpec(_Strict):
    """GAN health (gan_core.health): detectors run every ``every`` steps; a finding is a warning
    on the job, or stops it when ``stop`` says so. Non-finite losses are always caught."""

    enabled: bool = Field(True, description="run the discriminator-won and mode-collapse detectors")
    stop: bool | None = Field(
        None, description="stop the job at a finding (reason diverged, discriminator_won or mode_collapse); "
        "default: sweep trials stop, other jobs get a warning"
    )
    every: int = Field(50, ge=1, le=1_000_000, description="steps between checks (each reads the step statistics "
                       "back from the device and generates one fixed batch)")
    min_step: int = Field(500, ge=0, description="no discriminator-won or collapse verdict on steps before this "
                          "one (at the start D always wins and G's samples are alike)")
    d_accuracy: float = Field(0.99, gt=0.5, le=1.0, description="D has won when its mean accuracy on real and "
                              "on fake samples are both at least this over d_window steps")
    d_window: int = Field(500, ge=1, le=1_000_000, description="steps of the discriminator-won window")
    samples: int = Field(256, ge=16, le=4096, description="size of the fixed-noise batch the diversity checks "
                         "generate")
    diversity_ratio: float = Field(0.2, ge=0.0, lt=1.0, description="collapse when the mean pairwise distance "
                                   "of G's fixed batch falls below this fraction of the real data's")
    mode_drop: float = Field(0.5, ge=0.0, lt=1.0, description="2-D mixtures: collapse when the modes the fixed "
                             "batch covers fall to at most this fraction of the most it covered before")
    patience: int = Field(3, ge=1, le=1000, description="consecutive checks a collapse must hold before it is "
                          "reported")


class TrainSpec(_Strict):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    d_steps: int = Field(1, ge=1, le=100, description="discriminator updates per step (n_critic)")
    g_steps: int = Field(1, ge=1, le=100, description="generator updates per step")
    lr_d: float = Field(2e-4, gt=0.0, le=1.0)
    lr_g: float = Field(2e-4, gt=0.0, le=1.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    gp_weight: float = Field(10.0, ge=0.0, le=1000.0, description="wgan-gp gradient penalty weight")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="one-sided: real target 1 - s")
    aux_weight: float = Field(1.0, ge=0.0, le=100.0, description="acgan classification loss weight")
    lr_decay: Literal["none", "linear"] = Field(
        "none", description="'linear': both learning rates fall linearly from lr_decay_start towards 0 at the last step"
    )
    lr_decay_start: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of train.steps where the decay begins")
    sync_batchnorm: bool | None = Field(
        None,
        description="with several devices: batch-norm statistics over the global batch (SyncBatchNorm), so N devices "
        "train like one; default: on when resources.devices > 1 and the model has batch norm",
    )
    d_update: Literal["joint", "split"] = Field(
        "joint",
        description="'joint': one discriminator optimizer step per d_step on the real and the fake batch together; "
        "'split': one step on the real batch, then one on the fake batch (the classic Keras tutorial's two "
        "train_on_batch calls: twice the discriminator updates); not with wgan-gp, whose penalty needs both",
    )
    d_fake_mode: Literal["train", "eval"] = Field(
        "train",
        description="how G makes the discriminator step's fakes: 'train' (batch statistics, and its batch-norm "
        "running statistics move, as in pytorch/examples' DCGAN) or 'eval' (the running statistics, left as they "
        "are: Keras' generator.predict)",
    )

    health: HealthSpec = Field(default_factory=HealthSpec, description="GAN health detectors (gan_core.health)")

    _steps_limit = _within("steps", "max_steps", "steps")

    _batch_limit = _within("batch_size", "max_batch_size", "examples per batch")


class EvalSpec(_Strict):
    at_end: bool = True
    n_samples: int = Field(
        0, ge=0, description="samples to evaluate (0 = 2500 for the 2-D mixtures, 26 000 for stacked-mnist "
        "(the benchmark's protocol), 5000 for other images)"
    )

    _eval_limit = _within("n_samples", "max_eval_samples", "evaluation samples")


class SamplingSpec(_Strict):
    rejection: Literal["none", "discriminator"] = Field(
        "none",
        description="'discriminator': samples (evaluation, generate) go through discriminator rejection sampling "
        "(Azadi et al. 2019) with the final discriminator; needs loss 'bce' or 'minimax' and model.pack 1",
    )
    rejection_quantile: float = Field(
        0.9, gt=0.0, lt=1.0,
        description="a sample whose discriminator logit is above this quantile of generated samples' logits is "
        "always kept, others with probability exp(logit - that logit)",
    )


class ResourcesSpec(_Strict):
    devices: int = Field(
        1, ge=1,
        description="devices (GPUs, or CPU processes) of one host that train this job data-parallel; "
        "train.batch_size is the global batch, split evenly over them",
    )

    _devices_limit = _within("devices", "max_devices", "devices per job")


class JobSpec(_Strict):
    name: str = Field(..., min_length=1, max_length=120)
    description: str | None = Field(
        None, max_length=2000, description="free text: what this spec is for (its first line is the one-line summary "
        "`ganforge presets` shows)",
    )
    dataset: DatasetSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: Loss = "bce"
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast (CUDA only)")
    compile: bool = Field(False, description="torch.compile the networks (CUDA only)")
    memory_format: Literal["contiguous", "channels_last"] = Field(
        "contiguous", description="dcgan: 'channels_last' keeps conv weights and images NHWC (faster tensor-core "
        "convolutions with bf16 on GPUs)",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    log_every: int = Field(100, ge=1)
    sample_every: int = Field(200, ge=1)
    sample_count: int = Field(64, ge=1, le=400, description="samples in each fixed-noise grid")
    checkpoint_every: int = Field(1000, ge=1)
    eval_every: int | None = Field(None, ge=1)
    # How the service runs the job (gan_core itself ignores these).
    max_attempts: int = Field(3, ge=1, le=20, description="attempts before a job whose worker keeps dying fails")
    max_runtime_seconds: float | None = Field(
        None, gt=0, description="training time over all attempts; then the job stops and saves a checkpoint"
    )
    on_max_runtime: Literal["fail", "keep"] = Field(
        "fail", description="at max_runtime_seconds: 'fail' (reason max_runtime_exceeded) or 'keep' (succeed "
        "with the generator trained so far)"
    )
    keep_checkpoints: int = Field(3, ge=1, le=1000, description="the latest K checkpoints stay in storage")
    keep_best_checkpoint: bool = Field(
        True, description="also keep the checkpoint with the best evaluation (a checkpoint step that was evaluated)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        model, data, train = self.model, self.dataset, self.train
        if data.name in POINT_DATASETS:
            if model.arch != "mlp":
                raise _field_error(
                    "model.arch", f"'{model.arch}' needs images; '{data.name}' gives 2-D points (use 'mlp')"
                )
            if model.conditioning != "none":
                raise _field_error("model.conditioning", f"'{data.name}' has no labels; use 'none'")
        if data.name == "image_folder" and model.conditioning != "none" and data.labels != "folders":
            raise _field_error(
                "model.conditioning", "this image_folder has no labels; set dataset.labels to 'folders' to make "
                "class sub-folders labels, or use 'none'"
            )
        if data.name == "stacked-mnist" and model.conditioning != "none":
            raise _field_error(
                "model.conditioning", "stacked-mnist measures how many of its 1000 modes an unconditional "
                "generator covers; use 'none'"
            )
        if model.arch == "dcgan":
            size = self.image_size
            if model.variant == "keras" and size not in (None, 28):
                raise _field_error("dataset.image_size", "the keras DCGAN variant makes 28x28 images only")
            if model.variant == "radford" and size is not None and size not in DCGAN_IMAGE_SIZES:
                raise _field_error("dataset.image_size", f"dcgan makes images of size {DCGAN_IMAGE_SIZES}, not {size}")
        devices = self.resources.devices
        if train.batch_size % devices:
            raise _field_error(
                "train.batch_size", f"the global batch must split evenly over resources.devices ({devices})"
            )
        if model.pack > 1:
            if train.batch_size % (model.pack * devices):
                need = f"model.pack ({model.pack})" if devices == 1 else (
                    f"model.pack x resources.devices ({model.pack} x {devices}): each device packs its own slice")
                raise _field_error("train.batch_size", f"must be a multiple of {need}")
            if model.conditioning != "none":
                raise _field_error("model.pack", "packing cannot be combined with conditioning")
        if train.d_update == "split" and self.loss == "wgan-gp":
            raise _field_error("train.d_update", "'split' cannot take the gradient penalty, which needs real and fake")
        if train.label_smoothing and self.loss not in ("minimax", "bce", "lsgan"):
            raise _field_error("train.label_smoothing", f"'{self.loss}' has no real target to smooth")
        if self.sampling.rejection != "none":
            if self.loss not in ("bce", "minimax"):
                raise _field_error(
                    "sampling.rejection", f"needs a logistic discriminator (loss 'bce' or 'minimax'), not '{self.loss}'"
                )
            if model.pack > 1:
                raise _field_error("sampling.rejection", "cannot score single samples with a packing discriminator")
        if self.memory_format == "channels_last" and model.arch != "dcgan":
            raise _field_error("memory_format", "channels_last is for the convolutional (dcgan) networks")
        if self.precision == "bf16" and self.device == "cpu":
            raise _field_error("precision", "bf16 autocast is for CUDA; use fp32 on the CPU")
        return self

    @property
    def image_size(self) -> int | None:
        """Square image size the networks work at, when known from the spec alone."""
        if self.dataset.image_size is not None:
            return self.dataset.image_size
        native = NATIVE_IMAGE_SHAPE.get(self.dataset.name)
        return native[1] if native else None

    @property
    def conditional(self) -> bool:
        return self.model.conditioning != "none"

    def eval_samples(self) -> int:
        if self.eval.n_samples:
            return self.eval.n_samples
        if self.dataset.name == "stacked-mnist":
            return STACKED_MNIST_EVAL_SAMPLES
        return 5000 if self.dataset.is_image else 2500


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a job spec."""
    return JobSpec.model_json_schema()


def _fields_at(model: type[BaseModel], path: Sequence[Any]) -> list[str]:
    """The field names of the sub-model at ``path`` inside ``model`` ([] where there is none)."""
    for part in path:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        candidates = [field.annotation, *get_args(field.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def error_details(exc: ValidationError, model: type[BaseModel] | None = None) -> list[dict[str, str]]:
    """[{field, problem}] for a pydantic error: the field path dotted, the reason in words; an
    unknown field of ``model`` (JobSpec's errors by default) names the closest known one."""
    import difflib

    if model is None and exc.title == JobSpec.__name__:
        model = JobSpec
    details = []
    for err in exc.errors(include_url=False):
        # An empty key (``{"": 1}``) is still named: a field path never has an empty part.
        loc = [str(part) if str(part) else '""' for part in err.get("loc", ())]
        problem = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            problem = "unknown field"
            raw = err.get("loc", ())
            known = _fields_at(model, raw[:-1]) if model is not None and raw else []
            close = difflib.get_close_matches(str(raw[-1]), known, n=1, cutoff=0.6) if known else []
            if close:
                problem += f"; did you mean '{close[0]}'?"
        named = _FIELD_PREFIX.match(problem) if err.get("type") == "value_error" else None
        if named:  # a cross-field check names its field in the message
            loc.append(named.group(1))
            problem = named.group(2)
        field = ".".join(loc) if loc else "(root)"
        details.append({"field": field, "problem": problem})
    return details


# A spec read back from a checkpoint was validated under its deployment's limits when it was
# accepted; reading it again applies no deployment limit (raised ones included).
NO_LIMITS: dict[str, int] = {key: 2**62 for key in DEFAULT_LIMITS}


def stored_spec(doc: dict[str, Any]) -> JobSpec:
    """The spec a checkpoint or generator file carries, without re-applying deployment limits."""
    return JobSpec.model_validate(doc, context=NO_LIMITS)


def load_spec(text: str | bytes, **context: int) -> JobSpec:
    """Parse JSON text into a spec (raises ValueError for bad JSON, ValidationError for bad specs)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    return JobSpec.model_validate(doc, context=context or None)
