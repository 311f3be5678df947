"""The sweep spec: its shape, dotted paths into JobSpec, and check_sweep's validation of the
trials before anything is queued."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from gan_core.spec import DEFAULT_LIMITS, error_details
from ganforge.jobs.sweep_spec import SweepSpec, SweepSpecError, check_sweep, trial_document, trial_spec

BASE = {"name": "ring", "dataset": {"name": "ring8"}, "train": {"steps": 3000}, "eval_every": 500}
DOC = {"name": "s", "base": BASE, "method": "random", "trials": 16, "max_parallel": 4,
       "space": {"train.lr_d": {"type": "log_uniform", "low": 1e-4, "high": 3e-3},
                 "train.seed": {"type": "int", "low": 0, "high": 10000},
                 "model.ema_decay": {"type": "choice", "values": [None, 0.999]}},
       "objective": {"metric": "hq_percent", "direction": "maximize"},
       "early_stopping": {"method": "asha", "min_steps": 1000, "reduction_factor": 3}}


def parse(**changes) -> SweepSpec:
    doc = copy.deepcopy(DOC)
    doc.update(changes)
    return SweepSpec.model_validate(doc, context={**DEFAULT_LIMITS, "max_trials": 256})


def field_of(exc: ValidationError) -> str:
    return error_details(exc)[0]["field"]


def test_the_issues_example_parses_and_checks():
    spec = parse()
    checked = check_sweep(spec, DEFAULT_LIMITS)
    # every combination of the range ends and the choices: 2 x 2 x 2
    assert len(checked) == 8
    assert {(j.train.lr_d, j.model.ema_decay) for j in checked} == {(a, b) for a in (1e-4, 3e-3) for b in (None, 0.999)}
    assert spec.planned_trials() == 16


def test_a_trial_sets_each_dotted_path_on_the_base():
    spec = parse()
    doc = trial_document(spec.base, {"train.lr_d": 0.002, "model.ema_decay": 0.999}, "s-3")
    assert doc["name"] == "s-3" and doc["train"]["lr_d"] == 0.002 and doc["model"]["ema_decay"] == 0.999
    assert doc["train"]["steps"] == 3000  # the rest is the base's
    assert spec.base.train.lr_d == 2e-4  # the base itself is untouched


@pytest.mark.parametrize("space, field", [
    ({"train.nope": {"type": "uniform", "low": 0, "high": 1}}, "space.train.nope"),
    ({"nope": {"type": "uniform", "low": 0, "high": 1}}, "space.nope"),
    ({"name": {"type": "choice", "values": ["a"]}}, "space.name"),
    ({"train.lr_d": {"type": "log_uniform", "low": 0, "high": 1}}, "space.train.lr_d.log_uniform.low"),
    ({"train.lr_d": {"type": "uniform", "low": 0.2, "high": 0.1}}, "space.train.lr_d.uniform.high"),
    ({"train.lr_d": {"type": "choice", "values": [0.1, 0.1]}}, "space.train.lr_d.choice.values"),
    ({"train.lr_d": {"type": "gaussian", "low": 0, "high": 1}}, "space.train.lr_d"),
])
def test_a_malformed_space_names_its_path(space, field):
    with pytest.raises(ValidationError) as caught:
        parse(space=space)
    assert field_of(caught.value) == field


def test_trials_are_capped_by_the_deployment():
    with pytest.raises(ValidationError) as caught:
        SweepSpec.model_validate({**DOC, "trials": 11}, context={"max_trials": 10})
    assert field_of(caught.value) == "trials"
    assert SweepSpec.model_validate({**DOC, "trials": 10}, context={"max_trials": 10}).trials == 10


def test_grid_takes_discrete_parameters_and_defaults_to_every_point():
    with pytest.raises(ValidationError) as caught:
        parse(method="grid")
    assert field_of(caught.value) == "space.train.lr_d"
    spec = parse(method="grid", trials=None, space={"train.seed": {"type": "int", "low": 0, "high": 4, "step": 2},
                                                    "model.ema_decay": {"type": "choice", "values": [None, 0.999]}})
    assert spec.planned_trials() == 6 and len(spec.grid()) == 6
    with pytest.raises(SweepSpecError) as too_many:
        check_sweep(spec.model_copy(update={"trials": 7}), DEFAULT_LIMITS)
    assert too_many.value.field == "trials"


def test_a_grid_with_one_invalid_point_is_refused_whole():
    spec = parse(method="grid", trials=None,
                 space={"train.batch_size": {"type": "choice", "values": [64, 128, 8192]}})
    with pytest.raises(SweepSpecError) as caught:
        check_sweep(spec, DEFAULT_LIMITS)
    assert caught.value.field == "space.train.batch_size" and "8192" in caught.value.problem


def test_a_value_of_the_wrong_type_for_its_field_names_the_path():
    with pytest.raises(SweepSpecError) as caught:
        check_sweep(parse(space={"train.steps": {"type": "uniform", "low": 2000, "high": 2500}}), DEFAULT_LIMITS)
    assert caught.value.field == "space.train.steps"


def test_a_combination_that_breaks_a_cross_field_rule_is_named():
    spec = parse(space={"model.pack": {"type": "choice", "values": [1, 3]}})  # 64 is not a multiple of 3
    with pytest.raises(SweepSpecError) as caught:
        check_sweep(spec, DEFAULT_LIMITS)
    assert caught.value.field == "space.model.pack"


def test_the_objective_must_be_a_figure_of_the_datasets_evaluation():
    with pytest.raises(SweepSpecError) as caught:
        check_sweep(parse(objective={"metric": "domain_fid", "direction": "minimize"}), DEFAULT_LIMITS)
    assert caught.value.field == "objective.metric"
    mnist = {"name": "m", "dataset": {"name": "mnist"}, "train": {"steps": 3000}, "eval_every": 500}
    with pytest.raises(SweepSpecError) as caught:
        check_sweep(parse(base=mnist, objective={"metric": "label_accuracy", "direction": "maximize"}), DEFAULT_LIMITS)
    assert "conditional" in caught.value.problem
    assert check_sweep(parse(base=mnist, objective={"metric": "domain_fid", "direction": "minimize"}), DEFAULT_LIMITS)


def test_early_stopping_needs_periodic_evaluations_below_the_budget():
    with pytest.raises(ValidationError) as caught:
        parse(base={**BASE, "eval_every": None})
    assert field_of(caught.value) == "base.eval_every"
    with pytest.raises(ValidationError) as caught:
        parse(early_stopping={"method": "median", "min_steps": 100})
    assert field_of(caught.value) == "early_stopping.min_steps"
    with pytest.raises(SweepSpecError) as over:
        check_sweep(parse(early_stopping={"method": "asha", "min_steps": 3000}), DEFAULT_LIMITS)
    assert over.value.field == "early_stopping.min_steps"
    assert parse(early_stopping=None, base={**BASE, "eval_every": None}).early_stopping is None


def test_the_base_is_validated_under_the_deployments_limits():
    with pytest.raises(ValidationError) as caught:
        SweepSpec.model_validate({**DOC, "base": {**BASE, "train": {"steps": 5000}}}, context={"max_steps": 4000})
    assert field_of(caught.value) == "base.train.steps"
    spec = parse()
    with pytest.raises(SweepSpecError) as caught:
        trial_spec(spec, {"train.seed": 1}, "t", {**DEFAULT_LIMITS, "max_steps": 100})
    assert caught.value.field == "base.train.steps"
