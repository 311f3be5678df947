"""image_folder: decoding (formats, resize + centre crop, RGB/gray, transparency, orientation),
labels from class folders, the sha256-keyed cache (a second job decodes nothing) and sampling."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.data import DataConfig, build_dataset, dataset_fingerprint
from gan_core.data import folder as folder_module
from gan_core.data.archive import ArchiveLimits
from gan_core.data.datasets import PixelDataset
from gan_core.data.errors import ArchiveError, DataError
from gan_core.data.folder import cache_entry, cache_key, decode_image, open_entry, prepare_folder
from gan_core.spec import JobSpec
from gan_core.trainer import Trainer

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def shapes_zip(path: Path, per_class: int = 4, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(per_class):
            for name, rgb in COLOURS.items():
                fmt = ("PNG", "JPEG", "WEBP")[i % 3]
                suffix = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[fmt]
                archive.writestr(f"set/{name}/{i}.{suffix}", encode(Image.new("RGB", (48, 40), rgb), fmt))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def folder_spec(path, **dataset) -> JobSpec:
    doc = {"name": "t", "dataset": {"name": "image_folder", "path": str(path), "image_size": 32, **dataset},
           "model": {"arch": "dcgan", "ngf": 8, "ndf": 8}, "train": {"steps": 2, "batch_size": 8},
           "eval": {"at_end": False}, "device": "cpu"}
    if dataset.get("labels") == "folders":
        doc["model"]["conditioning"] = "acgan"
    return JobSpec.model_validate(doc)


@pytest.fixture
def config(tmp_path) -> DataConfig:
    return DataConfig(cache_dir=tmp_path / "cache")


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Counts calls of the decoder (the cache test's witness)."""
    calls = []
    real = folder_module.decode_image

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(folder_module, "decode_image", counting)
    return calls


# ---- decoding one picture ------------------------------------------------------------------------


def test_resize_and_centre_crop_keep_the_middle():
    # 60x20: a red left third, green middle, blue right third: the square crop is the green middle
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    image.paste((0, 255, 0), (20, 0, 40, 20))
    image.paste((0, 0, 255), (40, 0, 60, 20))
    pixels = decode_image(encode(image), 16, 3)
    assert pixels.shape == (3, 16, 16) and pixels.dtype == np.uint8
    assert tuple(pixels[:, 8, 8]) == (0, 255, 0)
    for corner in (pixels[:, 0, 0], pixels[:, 15, 15]):  # the red and blue thirds are cropped away
        assert corner[1] > 240 and corner[0] < 16 and corner[2] < 16


def test_grayscale_and_formats():
    rgb = Image.new("RGB", (40, 40), (200, 100, 50))
    for fmt in ("PNG", "JPEG", "WEBP"):
        pixels = decode_image(encode(rgb, fmt, **({"quality": 95} if fmt != "PNG" else {})), 32, 1)
        assert pixels.shape == (1, 32, 32)
        expected = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
        assert abs(int(pixels[0, 16, 16]) - expected) <= 3, fmt


def test_transparency_is_flattened_onto_white():
    sprite = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    sprite.paste((255, 0, 0, 255), (5, 5, 15, 15))
    pixels = decode_image(encode(sprite), 20, 3)
    assert tuple(pixels[:, 0, 0]) == (255, 255, 255)
    assert tuple(pixels[:, 10, 10]) == (255, 0, 0)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the blue half ends up on top
    pixels = decode_image(encode(image, "JPEG", exif=exif, quality=95), 20, 3)
    assert pixels[2, 2, 10] > 200 and pixels[0, 2, 10] < 60  # top is blue
    assert pixels[0, 18, 10] > 200  # bottom is red


def test_large_jpegs_decode_at_a_reduced_scale_to_the_same_picture():
    big = Image.new("RGB", (1600, 1200), (10, 200, 30))
    pixels = decode_image(encode(big, "JPEG", quality=95), 64, 3)
    assert pixels.shape == (3, 64, 64)
    assert np.abs(pixels[:, 32, 32].astype(int) - (10, 200, 30)).max() <= 4


@pytest.mark.parametrize("data", [b"", b"not an image", encode(Image.new("RGB", (8, 8)), "PNG")[:40],
                                  encode(Image.new("RGB", (8, 8)), "GIF"), encode(Image.new("RGB", (8, 8)), "BMP")])
def test_unreadable_or_other_formats_are_none(data):
    assert decode_image(data, 32, 3) is None


def test_too_many_pixels_is_skipped(monkeypatch):
    monkeypatch.setattr(folder_module, "MAX_PIXELS", 100)
    assert decode_image(encode(Image.new("RGB", (20, 20))), 8, 3) is None


# ---- the dataset ---------------------------------------------------------------------------------


def test_dataset_from_a_zip_with_labels_skips_and_counts_a_corrupt_file(tmp_path, config):
    path = shapes_zip(tmp_path / "s.zip", extra={"set/red/corrupt.png": b"\x89PNG\r\n\x1a\n broken", "set/readme.md": b"#"})
    data = build_dataset(folder_spec(path, labels="folders").dataset, config)
    assert isinstance(data, PixelDataset)
    summary = data.summary
    assert (summary.files, summary.images, summary.skipped) == (14, 12, 2)
    assert summary.classes == ["blue", "green", "red"] and summary.cache == "miss"
    assert data.shape == (3, 32, 32) and data.num_classes == 3 and len(data) == 12
    images, labels = data.sample(64)
    assert images.dtype == torch.float32 and images.shape == (64, 3, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    # every image is one flat colour, and its label is that colour's class folder
    colour = (images[:, :, 16, 16] > 0).int()  # (B, 3) channels above mid-grey
    index = {name: i for i, name in enumerate(summary.classes)}
    for row, label in zip(colour.tolist(), labels.tolist()):
        expected = [int(v > 127) for v in COLOURS[summary.classes[label]]]
        assert row == expected
    assert set(labels.tolist()) == set(index.values())


def test_tar_gz_without_labels_and_grayscale(tmp_path, config):
    path = tmp_path / "s.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for i in range(5):
            data = encode(Image.new("RGB", (33, 70), (i * 50, 0, 0)))
            info = tarfile.TarInfo(f"pics/{i}.png")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    data = build_dataset(folder_spec(path, channels=1, image_size=64).dataset, config)
    assert data.shape == (1, 64, 64) and data.num_classes is None and data.labels is None
    images, labels = data.sample(4)
    assert labels is None and images.shape == (4, 1, 64, 64)


def test_local_folder_is_a_source_too(tmp_path, config):
    for name, rgb in COLOURS.items():
        (tmp_path / "pics" / name).mkdir(parents=True)
        Image.new("RGB", (10, 10), rgb).save(tmp_path / "pics" / name / "a.png")
    data = build_dataset(folder_spec(tmp_path / "pics", labels="folders").dataset, config)
    assert data.summary.classes == ["blue", "green", "red"] and len(data) == 3


def test_second_job_on_the_same_archive_decodes_nothing(tmp_path, config, decodes):
    path = shapes_zip(tmp_path / "s.zip")
    spec = folder_spec(path).dataset
    first = build_dataset(spec, config)
    assert first.summary.cache == "miss" and len(decodes) == 12
    copy = tmp_path / "renamed.zip"  # the same bytes under another name: the same cache entry
    copy.write_bytes(path.read_bytes())
    second = build_dataset(folder_spec(copy).dataset, config)
    assert second.summary.cache == "hit" and len(decodes) == 12
    assert np.array_equal(first.array, second.array)
    # another size, channel count or label mode is another entry
    build_dataset(folder_spec(path, image_size=64).dataset, config)
    assert len(decodes) == 24


def test_prepared_entry_is_found_by_sha256_without_the_source(tmp_path, config, decodes):
    path = shapes_zip(tmp_path / "s.zip")
    first = prepare_folder(path, config.cache_dir, 32, 3, "folders")
    again = prepare_folder(None, config.cache_dir, 32, 3, "folders", sha256=first.summary.sha256)
    assert again.entry == first.entry and again.summary.cache == "hit" and len(decodes) == 12
    # a worker hands the trainer the entry itself: nothing is decoded or hashed
    data = build_dataset(folder_spec(first.entry, labels="folders").dataset, config)
    assert len(data) == 12 and data.num_classes == 3 and len(decodes) == 12
    with pytest.raises(DataError, match="64 px"):
        build_dataset(folder_spec(first.entry, labels="folders", image_size=64).dataset, config)
    with pytest.raises(DataError, match="not in the cache"):
        prepare_folder(None, config.cache_dir, 32, 3, "none", sha256="0" * 64)


def test_cache_entry_is_a_plain_npy_memory_mapped(tmp_path, config):
    path = shapes_zip(tmp_path / "s.zip")
    prepared = prepare_folder(path, config.cache_dir, 32, 3, "folders")
    assert prepared.entry == cache_entry(config.cache_dir, cache_key(prepared.summary.sha256, 32, 3, "folders"))
    assert prepared.entry.parent.parent == config.cache_dir  # nothing outside the cache folder
    plain = np.load(prepared.entry / "images.npy")  # numpy reads the header we wrote
    assert plain.shape == (12, 3, 32, 32) and plain.dtype == np.uint8
    arrays = open_entry(prepared.entry)
    assert isinstance(arrays.pixels, np.memmap)
    meta = json.loads((prepared.entry / "meta.json").read_text())
    assert meta["summary"]["images"] == 12
    leftovers = [p for p in prepared.entry.parent.iterdir() if p != prepared.entry]
    assert leftovers == []  # the temporary build folder is gone


def test_damaged_cache_entry_is_decoded_again(tmp_path, config, decodes):
    path = shapes_zip(tmp_path / "s.zip")
    prepared = prepare_folder(path, config.cache_dir, 32, 3, "none")
    (prepared.entry / "meta.json").write_text("{not json")
    again = prepare_folder(path, config.cache_dir, 32, 3, "none")
    assert again.summary.cache == "miss" and len(decodes) == 24


def test_refused_archive_leaves_no_cache_entry(tmp_path, config):
    path = shapes_zip(tmp_path / "s.zip", extra={"../evil.png": b"x"})
    with pytest.raises(ArchiveError):
        build_dataset(folder_spec(path).dataset, config)
    assert not any((config.cache_dir / "image-folders").iterdir())


def test_only_corrupt_images_is_empty(tmp_path, config):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.png", b"\x89PNG\r\n\x1a\n")
        archive.writestr("b.jpg", b"\xff\xd8\xff garbage")
    with pytest.raises(ArchiveError) as excinfo:
        build_dataset(folder_spec(path).dataset, config)
    assert excinfo.value.reason == "empty"


def test_labels_folders_needs_every_image_in_a_class_folder(tmp_path, config):
    path = shapes_zip(tmp_path / "s.zip", extra={"loose.png": encode(Image.new("RGB", (8, 8)))})
    with pytest.raises(ArchiveError, match="not inside a class folder"):
        build_dataset(folder_spec(path, labels="folders").dataset, config)
    assert len(build_dataset(folder_spec(path).dataset, config)) == 13  # without labels it is fine


def test_archive_limits_come_from_the_data_config(tmp_path):
    path = shapes_zip(tmp_path / "s.zip")
    config = DataConfig(cache_dir=tmp_path / "c", archive_limits=ArchiveLimits(max_files=5))
    with pytest.raises(ArchiveError) as excinfo:
        build_dataset(folder_spec(path).dataset, config)
    assert excinfo.value.reason == "too_many_files"


def test_limit_sampler_state_and_fingerprint(tmp_path, config):
    path = shapes_zip(tmp_path / "s.zip")
    spec = JobSpec.model_validate({**folder_spec(path).model_dump(), "dataset": {
        "name": "image_folder", "path": str(path), "image_size": 32, "limit": 5}})
    data = build_dataset(spec.dataset, config, seed=3)
    assert len(data) == 5
    state = data.state_dict()
    a, _ = data.sample(6)
    data.load_state_dict(state)
    b, _ = data.sample(6)
    assert torch.equal(a, b)
    entry_spec = folder_spec(prepare_folder(path, config.cache_dir, 32, 3, "none").entry).dataset
    assert dataset_fingerprint(folder_spec(path).dataset, config) == dataset_fingerprint(entry_spec, config)
    assert dataset_fingerprint(folder_spec(path).dataset, config) != dataset_fingerprint(
        folder_spec(path, channels=1).dataset, config)


def test_trainer_runs_a_conditional_dcgan_on_a_folder(tmp_path, config):
    path = shapes_zip(tmp_path / "s.zip")
    trainer = Trainer(folder_spec(path, labels="folders"), data_config=config)
    result = trainer.run()
    assert result.step == 2
    assert trainer.state.num_classes == 3
