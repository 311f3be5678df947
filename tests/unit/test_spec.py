import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gan_core.spec import JobSpec, error_details, json_schema, load_spec

PRESETS = Path(__file__).resolve().parents[2] / "presets"

CLASSIC = {
    "name": "classic-mlp-mnist", "dataset": {"name": "mnist"}, "model": {"arch": "mlp", "latent_dim": 100},
    "loss": "bce", "train": {"steps": 12000, "batch_size": 32, "d_steps": 1, "g_steps": 2,
    "lr_d": 0.0002, "lr_g": 0.0002, "beta1": 0.5, "beta2": 0.999, "seed": 0},
    "sample_every": 200, "checkpoint_every": 1000,
}
RING = {
    "name": "ring", "dataset": {"name": "ring8"}, "model": {"arch": "mlp", "latent_dim": 2,
    "hidden_g": [400, 400, 400, 400], "hidden_d": [200, 200, 200]}, "loss": "bce",
    "train": {"steps": 3000, "batch_size": 100, "lr_d": 0.0001, "lr_g": 0.0001, "seed": 1},
}


def fields(doc, **context):
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(doc, context=context or None)
    return {d["field"]: d["problem"] for d in error_details(info.value)}


def with_(doc, path, value):
    doc = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return doc


def test_issue_documents_validate_as_they_are():
    classic = JobSpec.model_validate(CLASSIC)
    assert (classic.train.d_steps, classic.train.g_steps, classic.train.batch_size) == (1, 2, 32)
    assert classic.model.hidden_g == [256, 512, 1024] and classic.model.hidden_d == [512, 256]
    ring = JobSpec.model_validate(RING)
    assert ring.model.hidden_g == [400] * 4 and ring.dataset.name == "ring8"


def test_every_preset_validates():
    presets = sorted(PRESETS.glob("*.json"))
    assert len(presets) >= 2
    for path in presets:
        load_spec(path.read_text())


def test_unknown_field_is_named():
    assert fields(with_(CLASSIC, "train.stepz", 3)) == {"train.stepz": "unknown field; did you mean 'steps'?"}
    assert "colour" in fields(with_(CLASSIC, "colour", "red"))


@pytest.mark.parametrize(
    "path,value,field",
    [
        ("train.batch_size", 0, "train.batch_size"),
        ("train.lr_d", -0.1, "train.lr_d"),
        ("train.steps", "many", "train.steps"),
        ("model.arch", "resnet", "model.arch"),
        ("loss", "wasserstein", "loss"),
        ("model.hidden_g", [256, 0], "model.hidden_g"),
    ],
)
def test_impossible_values_name_their_field(path, value, field):
    assert field in fields(with_(CLASSIC, path, value))


def test_steps_limit_comes_from_context():
    assert "train.steps" in fields(CLASSIC, max_steps=1000)
    problem = fields(CLASSIC, max_steps=1000)["train.steps"]
    assert "1000" in problem
    JobSpec.model_validate(CLASSIC, context={"max_steps": 12000})


def test_batch_limit_comes_from_context():
    assert "train.batch_size" in fields(CLASSIC, max_batch_size=16)


@pytest.mark.parametrize(
    "doc,field,words",
    [
        (with_(RING, "model.arch", "dcgan"), "model.arch", "2-D points"),
        (with_(RING, "model.conditioning", "cgan"), "model.conditioning", "no labels"),
        (with_(CLASSIC, "dataset", {"name": "npz"}), "dataset.path", "npz"),
        (with_(CLASSIC, "dataset.path", "/x.npz"), "dataset.path", "only the npz"),
        (with_(with_(CLASSIC, "model.arch", "dcgan"), "dataset.image_size", 48), "dataset.image_size", "dcgan"),
        (with_(with_(with_(CLASSIC, "model.arch", "dcgan"), "model.variant", "keras"), "dataset.image_size", 64),
         "dataset.image_size", "28x28"),
        (with_(CLASSIC, "model.pack", 3), "train.batch_size", "multiple"),
        (with_(with_(CLASSIC, "model.pack", 2), "model.conditioning", "acgan"), "model.pack", "conditioning"),
        (with_(with_(CLASSIC, "loss", "hinge"), "train.label_smoothing", 0.1), "train.label_smoothing", "no real target"),
        (with_(CLASSIC, "precision", "bf16") | {"device": "cpu"}, "precision", "CUDA"),
        (with_(CLASSIC, "resources", {"devices": 3}), "train.batch_size", "split evenly over resources.devices (3)"),
        (with_(with_(with_(CLASSIC, "model.pack", 4), "train.batch_size", 20), "resources", {"devices": 2}),
         "train.batch_size", "model.pack x resources.devices (4 x 2)"),
        (with_(CLASSIC, "resources", {"devices": 0}), "resources.devices", "greater than or equal to 1"),
        (with_(CLASSIC, "memory_format", "channels_last"), "memory_format", "dcgan"),
        (with_(with_(CLASSIC, "loss", "wgan-gp"), "train.d_update", "split"), "train.d_update", "gradient penalty"),
        (with_(CLASSIC, "train.d_fake_mode", "inference"), "train.d_fake_mode", "'train' or 'eval'"),
    ],
)
def test_cross_field_errors_name_the_field_and_say_why(doc, field, words):
    problems = fields(doc)
    assert field in problems, problems
    assert words in problems[field]


def test_json_schema_exports_the_spec():
    schema = json_schema()
    assert schema["title"] == "JobSpec"
    assert "dataset" in schema["required"]
    assert schema["additionalProperties"] is False


def test_load_spec_reports_bad_json():
    with pytest.raises(ValueError, match="not valid JSON"):
        load_spec("{nope")


def test_devices_are_limited_by_the_deployment():
    doc = with_(CLASSIC, "resources", {"devices": 16})
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(doc)
    assert "at most 8 devices" in str(info.value)  # the default limit
    assert JobSpec.model_validate(doc, context={"max_devices": 16}).resources.devices == 16
    with pytest.raises(ValidationError):
        JobSpec.model_validate(with_(CLASSIC, "resources", {"devices": 2}), context={"max_devices": 1})


@pytest.mark.parametrize(
    "path,value",
    [
        ("train.steps", True),  # was a 1-step job
        ("train.steps", "200"),  # was 200 steps
        ("train.batch_size", 32.0),
        ("train.lr_d", "0.0002"),
        ("train.lr_g", True),
        ("model.latent_dim", "100"),
        ("model.hidden_g", [256, "512"]),
        ("model.g_batchnorm", 1),
        ("model.g_batchnorm", "true"),
        ("dataset.image_size", "28"),
        ("dataset.limit", False),
        ("eval.at_end", 0),
        ("compile", "false"),
        ("max_runtime_seconds", "60"),
        ("max_runtime_seconds", True),
        ("max_attempts", 2.0),
    ],
)
def test_no_type_is_coerced(path, value):
    field = path if path != "model.hidden_g" else "model.hidden_g.1"
    assert field in fields(with_(CLASSIC, path, value))


def test_channels_refuses_a_boolean():
    npz = with_(with_(CLASSIC, "dataset", {"name": "npz", "path": "/data/x.npz"}), "dataset.channels", True)
    assert "dataset.channels" in fields(npz)
    assert JobSpec.model_validate(with_(npz, "dataset.channels", 3)).dataset.channels == 3


def test_json_numbers_still_fill_float_fields():
    spec = JobSpec.model_validate(with_(with_(CLASSIC, "train.lr_d", 1), "max_runtime_seconds", 60))
    assert spec.train.lr_d == 1.0 and isinstance(spec.train.lr_d, float) and spec.max_runtime_seconds == 60.0
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec  # a stored spec reads back
