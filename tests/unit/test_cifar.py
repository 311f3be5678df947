"""CIFAR-10's binary version on synthetic files in the same format: parsing, the sha256 check, the
download path from a mirror, training, the evaluator's classifier and `ganforge classifier train`."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_core.cli import main
from gan_core.data import DataConfig, build_dataset, dataset_fingerprint, load_test_images
from gan_core.data import cifar
from gan_core.data.errors import ChecksumError, DataError
from gan_core.data.fetch import DEFAULT_MIRRORS, KNOWN_FILES, KnownFile
from gan_core.spec import DatasetSpec, JobSpec
from gan_core.trainer import Trainer

# The dataset's page (https://www.cs.toronto.edu/~kriz/cifar.html) publishes this md5 for the
# binary version; the sha256 is what TensorFlow Datasets (url_checksums/cifar10.txt), Julia's
# MLDatasets and gomlx pin for that same 170 052 171-byte file.
PUBLISHED_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
PUBLISHED_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"


def records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n CIFAR-10 records: the label byte, then the red, green and blue planes (32x32 row-major)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
    raw = b"".join(bytes([labels[i]]) + images[i].tobytes() for i in range(n))
    return raw, images, labels.astype(np.int64)


def synthetic_archive(per_batch: int = 20, test: int = 30) -> tuple[bytes, dict]:
    members, truth = {}, {"train": ([], []), "test": ([], [])}
    for i in range(1, 6):
        raw, images, labels = records(per_batch, seed=i)
        members[f"data_batch_{i}.bin"] = raw
        truth["train"][0].append(images)
        truth["train"][1].append(labels)
    raw, images, labels = records(test, seed=99)
    members["test_batch.bin"] = raw
    truth["test"][0].append(images)
    truth["test"][1].append(labels)
    members["batches.meta.txt"] = "\n".join(cifar.CLASSES).encode()
    members["readme.html"] = b"<html></html>"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue(), {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in truth.items()}


@pytest.fixture(autouse=True)
def fresh_parse_cache():
    cifar._parsed.clear()
    yield
    cifar._parsed.clear()


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """A synthetic archive in <data_dir>/cifar10/ whose sha256 stands in for the real one."""
    data, truth = synthetic_archive()
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    (folder / cifar.ARCHIVE).write_bytes(data)
    monkeypatch.setitem(KNOWN_FILES, "cifar10",
                        {cifar.ARCHIVE: KnownFile(cifar.ARCHIVE, gz_sha256=hashlib.sha256(data).hexdigest())})
    return DataConfig(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"), truth, data


def test_checksum_constants_are_the_published_ones():
    known = KNOWN_FILES["cifar10"][cifar.ARCHIVE]
    assert known.gz_sha256 == PUBLISHED_SHA256 and known.raw_sha256 is None
    assert DEFAULT_MIRRORS["cifar10"] == ("https://www.cs.toronto.edu/~kriz/",)
    # md5 and sha256 are of the same bytes: a 170 052 171-byte tar.gz (the md5 is what the page shows)
    assert len(PUBLISHED_MD5) == 32 and cifar.ARCHIVE == "cifar-10-binary.tar.gz"


def test_splits_parse_pixels_in_the_red_green_blue_plane_order(synthetic):
    config, truth, _ = synthetic
    for split, size in (("train", 100), ("test", 30)):
        images, labels = cifar.load_cifar_split(split, config)
        assert images.shape == (size, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
        np.testing.assert_array_equal(images, truth[split][0])
        np.testing.assert_array_equal(labels, truth[split][1])


def test_one_record_by_hand():
    red = np.arange(1024, dtype=np.uint8)
    raw = bytes([7]) + red.tobytes() + bytes(1024) + bytes([255] * 1024)
    images, labels = cifar.parse_batch(raw, "one")
    assert labels.tolist() == [7]
    assert images[0, 0, 0, 5] == 5 and images[0, 0, 1, 0] == 32 % 256  # row-major red plane
    assert images[0, 1].max() == 0 and images[0, 2].min() == 255


@pytest.mark.parametrize("raw,problem", [(b"\x01" * 3072, "whole number"), (bytes([10]) + bytes(3072), "out of range")])
def test_bad_batches(raw, problem):
    with pytest.raises(DataError, match=problem):
        cifar.parse_batch(raw, "bad")


def test_a_pickled_or_incomplete_archive_is_refused(tmp_path, monkeypatch):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:  # the python version's layout
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"\x80\x04."))
    folder = tmp_path / "cifar10"
    folder.mkdir()
    (folder / cifar.ARCHIVE).write_bytes(out.getvalue())
    monkeypatch.setitem(KNOWN_FILES, "cifar10", {cifar.ARCHIVE: KnownFile(
        cifar.ARCHIVE, gz_sha256=hashlib.sha256(out.getvalue()).hexdigest())})
    with pytest.raises(DataError, match="binary version"):
        cifar.load_cifar_split("train", DataConfig(data_dir=tmp_path, cache_dir=tmp_path / "c"))


def test_a_file_that_is_not_the_published_one_is_refused(tmp_path):
    data, _ = synthetic_archive()
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / cifar.ARCHIVE).write_bytes(data)
    with pytest.raises(ChecksumError, match=PUBLISHED_SHA256):  # the real constant: a synthetic file fails it
        cifar.load_cifar_split("train", DataConfig(data_dir=tmp_path, cache_dir=tmp_path / "c", mirrors={"cifar10": []}))


def test_download_from_a_mirror_is_checked_and_cached(tmp_path, monkeypatch):
    import http.server
    import threading

    data, truth = synthetic_archive()
    monkeypatch.setitem(KNOWN_FILES, "cifar10", {cifar.ARCHIVE: KnownFile(cifar.ARCHIVE, gz_sha256=hashlib.sha256(data).hexdigest())})
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www" / "kriz"
    www.mkdir(parents=True)
    (www / cifar.ARCHIVE).write_bytes(data)
    asked = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)

        def log_message(self, *args):
            asked.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/kriz/"
        config = DataConfig(cache_dir=tmp_path / "cache", mirrors={"cifar10": [url]})
        images, _ = cifar.load_cifar_split("test", config)
        np.testing.assert_array_equal(images, truth["test"][0])
        assert (tmp_path / "cache" / "cifar10" / cifar.ARCHIVE).read_bytes() == data
        cifar._parsed.clear()
        cifar.load_cifar_split("train", config)  # from the cache now
        assert asked == [f"/kriz/{cifar.ARCHIVE}"]
    finally:
        server.shutdown()
        server.server_close()


def test_dataset_spec_training_and_test_images(synthetic):
    config, truth, _ = synthetic
    data = build_dataset(DatasetSpec(name="cifar10"), config)
    assert data.shape == (3, 32, 32) and data.num_classes == 10 and len(data) == 100
    expected = torch.from_numpy(truth["train"][0][:3]).float() / 127.5 - 1
    assert torch.allclose(data.images[:3], expected)
    test_images, test_labels = load_test_images(DatasetSpec(name="cifar10"), config)
    assert test_images.shape == (30, 3, 32, 32) and test_labels.tolist() == truth["test"][1].tolist()
    resized = build_dataset(DatasetSpec(name="cifar10", image_size=64), config)
    assert resized.shape == (3, 64, 64)
    assert dataset_fingerprint(DatasetSpec(name="cifar10"), config) != dataset_fingerprint(
        DatasetSpec(name="cifar10", image_size=64), config)


def test_spec_rules():
    spec = JobSpec.model_validate({"name": "c", "dataset": {"name": "cifar10"}, "model": {"arch": "dcgan",
                                                                                          "conditioning": "acgan"}})
    assert spec.image_size == 32 and spec.dataset.is_image
    with pytest.raises(ValueError, match="channels"):
        DatasetSpec(name="cifar10", channels=1)
    with pytest.raises(ValueError, match="path"):
        DatasetSpec(name="cifar10", path="/x")


def test_a_conditional_dcgan_trains_and_is_evaluated(synthetic, monkeypatch):
    config, _, _ = synthetic
    spec = JobSpec.model_validate({
        "name": "c", "dataset": {"name": "cifar10"}, "device": "cpu",
        "model": {"arch": "dcgan", "ngf": 8, "ndf": 8, "conditioning": "cgan"},
        "train": {"steps": 2, "batch_size": 10}, "eval": {"n_samples": 40}})
    result = Trainer(spec, data_config=config).run()
    assert result.step == 2
    assert result.evaluation["n_samples"] == 40 and "classifier_test_accuracy" in result.evaluation


def test_classifier_train_command_accepts_cifar10_when_present(synthetic, tmp_path, capsys):
    config, _, _ = synthetic
    cache = tmp_path / "classifier-cache"
    assert main(["classifier", "train", "cifar10", "--data-dir", str(config.data_dir), "--cache-dir", str(cache)]) == 0
    assert "cifar10: domain classifier test accuracy" in capsys.readouterr().out
    assert len(list((cache / "classifiers").glob("domain-classifier-*.pt"))) == 1


def test_classifier_train_command_without_the_data_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GANFORGE_DATASET_MIRRORS", '{"cifar10": []}')  # never the real 162 MiB download
    code = main(["classifier", "train", "cifar10", "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code != 0 and "cifar10" in err and "Traceback" not in err
