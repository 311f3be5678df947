"""The sweep spec: one search over job specs (pydantic, published in the OpenAPI document).

    {"name": "ring8-lr", "base": <JobSpec>, "method": "random", "trials": 16, "max_parallel": 4,
     "space": {"train.lr_d": {"type": "log_uniform", "low": 1e-4, "high": 3e-3},
               "train.seed": {"type": "int", "low": 0, "high": 10000},
               "model.ema_decay": {"type": "choice", "values": [null, 0.999]}},
     "objective": {"metric": "hq_percent", "direction": "maximize"},
     "early_stopping": {"method": "asha", "min_steps": 1000, "reduction_factor": 3}}

A trial's spec is ``base`` with each ``space`` path set to the trial's value. ``check_sweep``
validates trial specs (every grid point; for continuous spaces the ends of each range and every
choice) as full ``JobSpec`` documents under the deployment's limits before anything is queued, so
a bad path or value is a 422 naming it (``space.train.lr_d``) and never a failed trial.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Any, Iterator, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from gan_core.spec import POINT_DATASETS, JobSpec, error_details
from ganforge.jobs.notify import Notify

DEFAULT_MAX_TRIALS = 256
MAX_DIMENSIONS = 16
MAX_CHOICES = 64
# The corner combinations of a continuous space validated in full up to this many; past it each
# dimension's candidates are validated with the others at their first candidate.
MAX_CHECKED_COMBINATIONS = 1024

# Figures of the job's evaluation (gan_core.evaluator) a sweep can optimise, by dataset kind.
MIXTURE_METRICS = ("hq_percent", "modes", "modes_min10", "reverse_kl", "hq_spread")
IMAGE_METRICS = ("domain_fid", "kid", "classes_covered", "mean_confidence", "label_accuracy",
                 "precision", "recall", "density", "coverage")
STACKED_METRICS = ("modes", "reverse_kl", "domain_fid", "kid", "precision", "recall", "density", "coverage")
Metric = Literal["hq_percent", "modes", "modes_min10", "reverse_kl", "hq_spread", "domain_fid", "kid",
                 "classes_covered", "mean_confidence", "label_accuracy", "precision", "recall", "density", "coverage"]


class SweepSpecError(ValueError):
    """A sweep that cannot run as given: ``field`` names the part at fault (``space.train.lr_d``)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Range(_Strict):
    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError("high: must be above low")
        return self


class LogUniform(_Range):
    type: Literal["log_uniform"]
    low: float = Field(..., gt=0)
    high: float = Field(..., gt=0)


class Uniform(_Range):
    type: Literal["uniform"]
    low: float
    high: float


class IntRange(_Range):
    type: Literal["int"]
    low: int
    high: int = Field(..., description="included")
    step: int = Field(1, ge=1)


class Choice(_Strict):
    type: Literal["choice"]
    values: list[Any] = Field(..., min_length=1, max_length=MAX_CHOICES,
                              description="JSON values the field takes (numbers, strings, booleans, null, lists)")

    @model_validator(mode="after")
    def _distinct(self):
        keys = [_key(v) for v in self.values]
        if len(set(keys)) != len(keys):
            raise ValueError("values: must be distinct")
        return self


Parameter = Annotated[Union[LogUniform, Uniform, IntRange, Choice], Field(discriminator="type")]


class Objective(_Strict):
    metric: Metric = Field(..., description="a figure of the trial's final evaluation")
    direction: Literal["minimize", "maximize"]


class EarlyStopping(_Strict):
    method: Literal["asha", "median"] = Field(
        ..., description="'asha': asynchronous successive halving (a trial continues past each rung only in the "
        "best 1/reduction_factor there); 'median': stop a trial below the median of earlier trials at the same step")
    min_steps: int = Field(..., ge=1, description="asha: the first rung's step budget (rung k: min_steps x "
                           "reduction_factor^k); median: no trial is stopped before this step")
    reduction_factor: int = Field(3, ge=2, le=16, description="asha: the budget's growth between rungs")
    startup_trials: int = Field(5, ge=0, le=100, description="median: trials finished before any is stopped")


class SweepSpec(_Strict):
    name: str = Field(..., min_length=1, max_length=100)
    base: JobSpec = Field(..., description="the job spec every trial starts from")
    method: Literal["grid", "random", "tpe"]
    trials: int | None = Field(None, ge=1, description="how many trials at most (grid: default and at most the "
                               "number of grid points)")
    max_parallel: int = Field(4, ge=1, le=64, description="trials queued or running at once")
    space: dict[str, Parameter] = Field(..., min_length=1, max_length=MAX_DIMENSIONS,
                                        description="by dotted JobSpec path, e.g. train.lr_d")
    objective: Objective
    early_stopping: EarlyStopping | None = Field(
        None, description="prune trials on their periodic evaluations (base.eval_every); null: every trial runs out")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the sampler's seed: the same sweep asks the same trials")
    notify: Notify | None = Field(None, description="a webhook called once the sweep ends (not per trial: a trial's "
                                  "job may have its own only when submitted alone)")

    @field_validator("trials")
    @classmethod
    def _trial_limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = int((info.context or {}).get("max_trials", DEFAULT_MAX_TRIALS))
        if value is not None and value > limit:
            raise ValueError(f"at most {limit} trials per sweep are allowed here")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        for path, parameter in self.space.items():
            problem = _path_problem(path)
            if problem:
                raise ValueError(f"space.{path}: {problem}")
            if self.method == "grid" and isinstance(parameter, (LogUniform, Uniform)):
                raise ValueError(f"space.{path}: method 'grid' takes 'choice' or 'int' parameters, not "
                                 f"'{parameter.type}'")
        if self.trials is None and self.method != "grid":
            raise ValueError(f"trials: required with method '{self.method}'")
        if self.early_stopping is not None:
            if self.base.eval_every is None:
                raise ValueError("base.eval_every: early stopping judges trials on their periodic evaluations; "
                                 "set eval_every (at most early_stopping.min_steps)")
            if self.base.eval_every > self.early_stopping.min_steps:
                raise ValueError(f"early_stopping.min_steps: must be at least base.eval_every ({self.base.eval_every})")
        if "eval_every" in self.space and self.early_stopping is not None:
            raise ValueError("space.eval_every: early stopping needs the same evaluation steps in every trial")
        return self

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point (method grid), in the space's order."""
        axes = [[(path, v) for v in _values(p)] for path, p in self.space.items()]
        return [dict(point) for point in itertools.product(*axes)]

    def planned_trials(self) -> int:
        if self.method == "grid":
            size = math.prod(len(_values(p)) for p in self.space.values())
            return min(self.trials or size, size)
        return self.trials or 0


def _key(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _values(parameter: Parameter) -> list[Any]:
    """The values of a discrete parameter (a choice's, or an int range's)."""
    if isinstance(parameter, Choice):
        return list(parameter.values)
    if isinstance(parameter, IntRange):
        return list(range(parameter.low, parameter.high + 1, parameter.step))
    raise TypeError(parameter.type)


def _candidates(parameter: Parameter) -> list[Any]:
    """The values of a parameter that check_sweep validates: every choice, the ends of a range."""
    if isinstance(parameter, Choice):
        return list(parameter.values)
    if isinstance(parameter, IntRange):
        last = parameter.low + (parameter.high - parameter.low) // parameter.step * parameter.step
        return sorted({parameter.low, last})
    return [parameter.low, parameter.high]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _path_problem(path: str) -> str | None:
    """Why ``path`` is not a JobSpec field a sweep may set (None when it is)."""
    parts = path.split(".")
    if parts[0] == "name":
        return "each trial is named after the sweep; 'name' is not searchable"
    model: type[BaseModel] | None = JobSpec
    for depth, part in enumerate(parts):
        if model is None or part not in model.model_fields:
            where = ".".join(parts[:depth]) or "the job spec"
            return f"'{part}' is not a field of {where}"
        model = _model_of(model.model_fields[part].annotation) if depth < len(parts) - 1 else None
    return None


def trial_document(base: JobSpec, params: dict[str, Any], name: str) -> dict[str, Any]:
    """The JobSpec document of one trial: ``base`` with each dotted path set to its value."""
    doc = base.model_dump(mode="json")
    doc["name"] = name
    for path, value in params.items():
        node = doc
        *parents, leaf = path.split(".")
        for part in parents:
            if node.get(part) is None:  # an optional sub-model left out of the base
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return doc


def trial_spec(spec: SweepSpec, params: dict[str, Any], name: str, limits: dict[str, int]) -> JobSpec:
    """One trial's JobSpec, validated under ``limits`` (SweepSpecError naming the field if invalid)."""
    try:
        return JobSpec.model_validate(trial_document(spec.base, params, name), context=limits)
    except ValidationError as exc:
        detail = error_details(exc)[0]
        field, problem = detail["field"], detail["problem"]
        if field in params:
            raise SweepSpecError(f"space.{field}", f"{params[field]!r}: {problem}") from None
        if not params or _invalid_alone(spec.base, name, limits):
            raise SweepSpecError(f"base.{field}", problem) from None
        shown = ", ".join(f"{p}={v!r}" for p, v in params.items())
        raise SweepSpecError(f"space.{next(iter(params))}", f"the trial with {shown} is invalid: {field}: {problem}") from None


def _invalid_alone(base: JobSpec, name: str, limits: dict[str, int]) -> bool:
    try:
        JobSpec.model_validate(trial_document(base, {}, name), context=limits)
    except ValidationError:
        return True
    return False


def _checked_points(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    if spec.method == "grid":
        yield from spec.grid()
        return
    axes = {path: _candidates(p) for path, p in spec.space.items()}
    if math.prod(len(values) for values in axes.values()) <= MAX_CHECKED_COMBINATIONS:
        for combination in itertools.product(*axes.values()):
            yield dict(zip(axes, combination))
        return
    first = {path: values[0] for path, values in axes.items()}
    for path, values in axes.items():
        for value in values:
            yield {**first, path: value}


def check_sweep(spec: SweepSpec, limits: dict[str, int]) -> list[JobSpec]:
    """Validate the trials a sweep may ask for before anything is queued (SweepSpecError naming the
    field otherwise): every grid point, or every corner and choice of a continuous space; the
    objective must be a figure the dataset's evaluation gives. Returns the specs checked."""
    points = list(_checked_points(spec))
    if spec.method == "grid" and spec.trials is not None and spec.trials > len(points):
        raise SweepSpecError("trials", f"the grid has {len(points)} points; ask for at most that many trials")
    checked = [trial_spec(spec, point, f"{spec.name}-check", limits) for point in points]
    for job in checked:
        _check_objective(spec, job)
        _check_early_stopping(spec, job)
    return checked


def _check_objective(spec: SweepSpec, job: JobSpec) -> None:
    metric, dataset = spec.objective.metric, job.dataset.name
    offered = (MIXTURE_METRICS if dataset in POINT_DATASETS else
               STACKED_METRICS if dataset == "stacked-mnist" else IMAGE_METRICS)
    if metric not in offered:
        raise SweepSpecError("objective.metric", f"'{dataset}' is evaluated with {', '.join(offered)}; "
                             f"not {metric}")
    if metric == "label_accuracy" and not job.conditional:
        raise SweepSpecError("objective.metric", "label_accuracy needs a conditional model (model.conditioning)")
    if not job.eval.at_end:
        raise SweepSpecError("base.eval.at_end", "a trial's objective is read from its final evaluation; keep it on")


def _check_early_stopping(spec: SweepSpec, job: JobSpec) -> None:
    stopping = spec.early_stopping
    if stopping is not None and stopping.min_steps >= job.train.steps:
        raise SweepSpecError("early_stopping.min_steps", f"must be below the trials' train.steps ({job.train.steps})")
