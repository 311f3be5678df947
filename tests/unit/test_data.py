"""Tests of gan_core.data: IDX files (local, verified, downloaded), mixtures, npz, the sampler."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import itertools
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan_core.cli import data_config_from_env
from gan_core.data import (
    ChecksumError,
    DataConfig,
    DataError,
    DownloadError,
    ImageDataset,
    KNOWN_FILES,
    MixtureDataset,
    build_dataset,
    dataset_file,
    dataset_fingerprint,
    load_idx_split,
    load_npz,
    load_test_images,
)
from gan_core.spec import DatasetSpec

torch.set_num_threads(1)

SHARED = Path("/work/shared/datasets")
MNIST_DIR = SHARED / "mnist"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
# Class counts of the official MNIST splits.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TEST_LABELS_RAW_SHA256 = "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"

needs_mnist = pytest.mark.usefixtures("data_dir")  # fails (never skips) without MNIST


def offline_config(tmp_path: Path, data_dir: Path | None = SHARED) -> DataConfig:
    # No mirrors: a test that would reach the network fails instead; no packaged datasets of this machine.
    return DataConfig(data_dir=data_dir, cache_dir=tmp_path / "cache", mirrors={"mnist": [], "fashion-mnist": []},
                      system_dirs=())


def corrupt_gzip(path: Path, offset: int = 100) -> bytes:
    """The gzip of ``path`` with one byte of its decompressed content changed."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[offset] ^= 0x01
    return gzip.compress(bytes(raw), mtime=0)


def cache_files(config: DataConfig) -> list[Path]:
    return [p for p in config.cache_dir.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------------------------
# MNIST from the data dir
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_train() -> tuple[np.ndarray, np.ndarray]:
    if not MNIST_DIR.is_dir():
        pytest.fail("MNIST files not available: set GANFORGE_DATA_DIR")
    return load_idx_split("mnist", "train", DataConfig(data_dir=SHARED, mirrors={"mnist": []}))


@needs_mnist
def test_mnist_train_split_shapes_and_labels(mnist_train):
    images, labels = mnist_train
    assert images.shape == (60_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60_000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == MNIST_TRAIN_COUNTS
    assert images.min() == 0 and images.max() == 255


@needs_mnist
def test_mnist_dataset_scaled_and_sampled(tmp_path, mnist_train):
    images, labels = mnist_train
    ds = build_dataset(DatasetSpec(name="mnist", limit=500), offline_config(tmp_path), seed=3)
    assert isinstance(ds, ImageDataset)
    assert ds.kind == "image" and ds.shape == (1, 28, 28) and ds.num_classes == 10 and len(ds) == 500
    expected = torch.from_numpy(images[:500].astype(np.float32) / 127.5 - 1.0)[:, None]
    torch.testing.assert_close(ds.images, expected, rtol=0, atol=1e-6)
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    x, y = ds.sample(64)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    # Each sampled image carries its own label.
    index = [int(torch.nonzero((ds.images == img).flatten(1).all(1))[0]) for img in x[:8]]
    assert y[:8].tolist() == labels[index].tolist()


@needs_mnist
def test_mnist_test_images_native_size(tmp_path):
    spec = DatasetSpec(name="mnist", image_size=32)
    x, y = load_test_images(spec, offline_config(tmp_path))
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == MNIST_TEST_COUNTS
    assert load_test_images(DatasetSpec(name="ring8"), offline_config(tmp_path)) is None
    assert load_test_images(DatasetSpec(name="npz", path="x.npz"), offline_config(tmp_path)) is None


@needs_mnist
def test_resize_to_32_once_at_load(tmp_path, mnist_train):
    ds = build_dataset(DatasetSpec(name="mnist", image_size=32, limit=50), offline_config(tmp_path))
    assert ds.shape == (1, 32, 32) and len(ds) == 50
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    native = torch.from_numpy(mnist_train[0][:50].astype(np.float32) / 127.5 - 1.0)[:, None]
    expected = F.interpolate(native, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(ds.images, expected.clamp(-1, 1), rtol=0, atol=1e-5)
    x, _ = ds.sample(4)
    assert x.shape == (4, 1, 32, 32)


@needs_mnist
def test_recompressed_gzip_with_same_content_is_accepted(tmp_path):
    # The raw sha256 is checked, so a mirror's different gzip of the same bytes is fine.
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    raw = gzip.decompress((MNIST_DIR / TEST_LABELS).read_bytes())
    (tmp_path / "data" / "mnist" / TEST_LABELS).write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    path = dataset_file("mnist", TEST_LABELS, offline_config(tmp_path, tmp_path / "data"))
    assert path == tmp_path / "data" / "mnist" / TEST_LABELS


@needs_mnist
def test_checksum_mismatch_names_file_and_hashes(tmp_path):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    bad = corrupt_gzip(MNIST_DIR / TEST_LABELS)
    (folder / TEST_LABELS).write_bytes(bad)
    actual = hashlib.sha256(gzip.decompress(bad)).hexdigest()
    config = offline_config(tmp_path, tmp_path / "data")
    with pytest.raises(ChecksumError) as info:
        dataset_file("mnist", TEST_LABELS, config)
    message = str(info.value)
    assert str(folder / TEST_LABELS) in message
    assert MNIST_TEST_LABELS_RAW_SHA256 in message and actual in message
    # load_idx_split goes through the same check (the images are fine, the labels are not).
    (folder / TEST_IMAGES).symlink_to(MNIST_DIR / TEST_IMAGES)
    with pytest.raises(ChecksumError):
        load_idx_split("mnist", "test", config)
    assert cache_files(config) == []


@needs_mnist
def test_truncated_gzip_is_an_error(tmp_path):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    data = (MNIST_DIR / TEST_IMAGES).read_bytes()
    (folder / TEST_IMAGES).write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumError, match="truncated") as info:
        dataset_file("mnist", TEST_IMAGES, offline_config(tmp_path, tmp_path / "data"))
    assert TEST_IMAGES in str(info.value)


def test_unknown_files_and_splits_are_rejected(tmp_path):
    config = offline_config(tmp_path)
    with pytest.raises(DataError, match="not a file of"):
        dataset_file("mnist", "passwords.gz", config)
    with pytest.raises(DataError, match="no files"):
        dataset_file("ring8", TEST_LABELS, config)
    with pytest.raises(DataError, match="split"):
        load_idx_split("mnist", "validation", config)  # type: ignore[arg-type]


def test_missing_file_without_mirrors_is_a_clear_error(tmp_path):
    config = offline_config(tmp_path, tmp_path / "empty")
    with pytest.raises(DownloadError, match="no mirrors"):
        dataset_file("mnist", TEST_LABELS, config)
    # Fashion-MNIST's files come packaged for Debian: the error says which package.
    with pytest.raises(DownloadError, match=r"apt-get install dataset-fashion-mnist") as info:
        load_idx_split("fashion-mnist", "train", config)
    assert "fashion-mnist/train-images-idx3-ubyte.gz" in str(info.value)


@needs_mnist
def test_packaged_datasets_are_read_after_the_data_dir(tmp_path):
    # A system dir in the data dir's layout (Debian's dataset-* packages: /usr/share/datasets/<name>/),
    # its gzip recompressed as a packager may: verified by content, read where the data dir has no copy.
    system = tmp_path / "system"
    (system / "mnist").mkdir(parents=True)
    raw = gzip.decompress((MNIST_DIR / TEST_LABELS).read_bytes())
    (system / "mnist" / TEST_LABELS).write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    config = DataConfig(data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache", mirrors={"mnist": []},
                        system_dirs=(str(system),))
    assert dataset_file("mnist", TEST_LABELS, config) == system / "mnist" / TEST_LABELS
    assert cache_files(config) == []
    # The data dir comes first.
    (tmp_path / "empty" / "mnist").mkdir(parents=True)
    (tmp_path / "empty" / "mnist" / TEST_LABELS).symlink_to(MNIST_DIR / TEST_LABELS)
    assert dataset_file("mnist", TEST_LABELS, config) == tmp_path / "empty" / "mnist" / TEST_LABELS
    # A damaged packaged copy is an error naming it, not silently skipped.
    (system / "mnist" / TEST_IMAGES).write_bytes(corrupt_gzip(MNIST_DIR / TEST_IMAGES))
    with pytest.raises(ChecksumError, match=str(system / "mnist" / TEST_IMAGES)):
        dataset_file("mnist", TEST_IMAGES, config)


def test_fashion_mnist_is_verified_by_content():
    # Raw hashes only: a recompressed copy (Debian's package) of the published files is accepted.
    files = KNOWN_FILES["fashion-mnist"].values()
    assert len(files) == 4 and all(f.raw_sha256 and not f.gz_sha256 for f in files)


# --------------------------------------------------------------------------------------------
# Downloads from a local HTTP server
# --------------------------------------------------------------------------------------------


class Mirror:
    """A static HTTP server on 127.0.0.1 that records the paths it was asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_request(self, code="-", size="-"):
                mirror.requests.append(self.path)

            def log_message(self, format, *args):  # keep pytest output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def put(self, relative: str, data: bytes) -> None:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Iterator[Mirror]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    server = Mirror(root)
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@needs_mnist
def test_download_into_cache_once(tmp_path, mirror, monkeypatch):
    for name in (TEST_IMAGES, TEST_LABELS):
        mirror.put(f"mnist/{name}", (MNIST_DIR / name).read_bytes())
    (tmp_path / "empty").mkdir()
    config = DataConfig(data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache", mirrors={"mnist": [f"{mirror.url}/mnist/"]})

    images, labels = load_idx_split("mnist", "test", config)
    assert sorted(mirror.requests) == [f"/mnist/{TEST_IMAGES}", f"/mnist/{TEST_LABELS}"]
    assert sorted(p.name for p in cache_files(config)) == [TEST_IMAGES, TEST_LABELS]
    reference = load_idx_split("mnist", "test", offline_config(tmp_path))
    np.testing.assert_array_equal(images, reference[0])
    np.testing.assert_array_equal(labels, reference[1])

    # Second time: from the (re-verified) cache, not the server.
    assert dataset_file("mnist", TEST_LABELS, config) == tmp_path / "cache" / "mnist" / TEST_LABELS
    load_idx_split("mnist", "test", config)
    assert len(mirror.requests) == 2


@needs_mnist
@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_corrupt_mirror_falls_back_and_leaves_no_file(tmp_path, mirror, damage):
    good = (MNIST_DIR / TEST_LABELS).read_bytes()
    bad = corrupt_gzip(MNIST_DIR / TEST_LABELS) if damage == "flipped" else good[: len(good) - 100]
    mirror.put(f"bad/{TEST_LABELS}", bad)
    mirror.put(f"good/{TEST_LABELS}", good)

    only_bad = DataConfig(data_dir=None, cache_dir=tmp_path / "c1", mirrors={"mnist": [f"{mirror.url}/bad"]})
    with pytest.raises(ChecksumError) as info:
        dataset_file("mnist", TEST_LABELS, only_bad)
    assert f"{mirror.url}/bad/{TEST_LABELS}" in str(info.value)
    assert cache_files(only_bad) == []

    both = DataConfig(
        cache_dir=tmp_path / "c2", mirrors={"mnist": [f"{mirror.url}/bad/", f"{mirror.url}/good/"]}
    )
    path = dataset_file("mnist", TEST_LABELS, both)
    assert mirror.requests[-2:] == [f"/bad/{TEST_LABELS}", f"/good/{TEST_LABELS}"]
    assert cache_files(both) == [path]
    raw = gzip.decompress(path.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == MNIST_TEST_LABELS_RAW_SHA256


def test_unreachable_mirrors_list_what_was_tried(tmp_path, mirror):
    urls = [f"{mirror.url}/nothing-here/", f"{mirror.url}/nor-here/"]
    config = DataConfig(cache_dir=tmp_path / "cache", mirrors={"mnist": urls})
    with pytest.raises(DownloadError) as info:
        dataset_file("mnist", TEST_LABELS, config)
    for url in urls:
        assert url + TEST_LABELS in str(info.value)
    assert "404" in str(info.value)
    assert cache_files(config) == []


def test_the_local_cli_reads_the_data_variables_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("GANFORGE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("GANFORGE_DATASET_MIRRORS", '{"mnist": "http://127.0.0.1:8000/mnist/"}')
    config = data_config_from_env()
    assert config.data_dir == tmp_path / "d" and config.cache_dir == tmp_path / "c"
    assert config.mirrors_for("mnist") == ("http://127.0.0.1:8000/mnist/",)
    assert config.mirrors_for("fashion-mnist")[0].startswith("http://fashion-mnist.s3")
    assert data_config_from_env(data_dir=None).data_dir is None
    assert DataConfig().data_dir is None  # the library itself reads no variable

    monkeypatch.setenv("GANFORGE_DATASET_MIRRORS", "{not json")
    with pytest.raises(DataError, match="GANFORGE_DATASET_MIRRORS"):
        data_config_from_env()
    with pytest.raises(DataError, match="unknown dataset"):
        DataConfig(mirrors={"mnsit": ["http://x/"]})
    with pytest.raises(DataError, match="http"):
        DataConfig(mirrors={"mnist": ["file:///etc/"]})


def test_default_config():
    config = DataConfig()
    assert config.data_dir is None
    assert config.cache_dir == Path.home() / ".cache" / "ganforge" / "datasets"
    assert config.mirrors_for("mnist") == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )
    assert config.max_npz_bytes == 2 * 1024**3
    assert config.system_dirs == (Path("/usr/share/datasets"),)


# --------------------------------------------------------------------------------------------
# Gaussian mixtures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, modes, sigma", [("ring8", 8, 0.02), ("grid25", 25, 0.05)])
def test_mixture_statistics(tmp_path, name, modes, sigma):
    ds = build_dataset(DatasetSpec(name=name), offline_config(tmp_path), seed=1)
    assert isinstance(ds, MixtureDataset)
    assert ds.kind == "points" and ds.shape == (2,) and ds.num_classes is None
    assert ds.centers.shape == (modes, 2) and ds.sigma == sigma
    n = 20_000
    x, y = ds.sample(n)
    assert y is None and x.shape == (n, 2) and x.dtype == torch.float32
    nearest = torch.cdist(x, ds.centers).argmin(dim=1)
    residual = x - ds.centers[nearest]
    assert residual.abs().max() < 6 * sigma
    assert abs(residual.std().item() - sigma) < 0.03 * sigma
    counts = torch.bincount(nearest, minlength=modes).float()
    expected = n / modes
    assert (counts - expected).abs().max() < 5 * expected**0.5


def test_mixture_centers():
    ring = MixtureDataset("ring8").centers
    torch.testing.assert_close(ring.norm(dim=1), torch.full((8,), 2.0))
    angles = torch.atan2(ring[:, 1], ring[:, 0]).remainder(2 * torch.pi).sort().values
    torch.testing.assert_close(angles, torch.arange(8) * (torch.pi / 4), atol=1e-5, rtol=0)
    grid = {tuple(c) for c in MixtureDataset("grid25").centers.tolist()}
    assert grid == set(itertools.product([-4.0, -2.0, 0.0, 2.0, 4.0], repeat=2))


# --------------------------------------------------------------------------------------------
# User npz files
# --------------------------------------------------------------------------------------------


def npz_bytes(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def npz_spec(path: Path | str = "upload.npz", **fields) -> DatasetSpec:
    return DatasetSpec(name="npz", path=str(path), **fields)


def test_npz_uint8_grayscale_from_path(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 16, 16), dtype=np.uint8)
    x[0, 0, 0], x[0, 0, 1] = 0, 255
    path = tmp_path / "data.npz"
    path.write_bytes(npz_bytes(x=x))
    ds = build_dataset(npz_spec(path), offline_config(tmp_path))
    assert ds.shape == (1, 16, 16) and len(ds) == 20 and ds.num_classes is None
    torch.testing.assert_close(ds.images[:, 0], torch.from_numpy(x / 127.5 - 1).float())
    assert ds.images[0, 0, 0, 0] == -1.0 and ds.images[0, 0, 0, 1] == 1.0
    batch, labels = ds.sample(8)
    assert batch.shape == (8, 1, 16, 16) and labels is None


def test_npz_rgb_with_labels_from_file_object(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(30, 12, 12, 3), dtype=np.uint8)
    y = np.arange(30) % 4
    spec = npz_spec(channels=3, limit=25, image_size=24)
    ds = build_dataset(spec, offline_config(tmp_path), npz_file=io.BytesIO(npz_bytes(x=x, y=y)))
    assert ds.shape == (3, 24, 24) and len(ds) == 25 and ds.num_classes == 4
    assert ds.labels.tolist() == y[:25].tolist()
    # Channels-last in the file, channels-first in memory.
    small = build_dataset(npz_spec(), offline_config(tmp_path), npz_file=io.BytesIO(npz_bytes(x=x, y=y)))
    torch.testing.assert_close(small.images[5, 2], torch.from_numpy(x[5, :, :, 2] / 127.5 - 1).float())


def test_npz_float_in_range(tmp_path):
    x = np.linspace(-1, 1, 10 * 8 * 8).reshape(10, 8, 8, 1)
    x_out, y_out = load_npz(io.BytesIO(npz_bytes(compressed=True, x=x, y=np.zeros(10, np.uint8))))
    assert x_out.shape == (10, 1, 8, 8) and x_out.dtype == np.float32
    assert y_out.dtype == np.int64
    np.testing.assert_allclose(x_out[:, 0], x[..., 0], atol=1e-7)


def _x(shape, dtype=np.uint8, fill=0):
    return np.full(shape, fill, dtype=dtype)


NPZ_ERRORS: dict[str, tuple[Callable[[], dict[str, np.ndarray]], str]] = {
    "2-d": (lambda: {"x": _x((10, 16))}, "N×H×W"),
    "5-d": (lambda: {"x": _x((2, 8, 8, 1, 1))}, "N×H×W"),
    "empty": (lambda: {"x": _x((0, 16, 16))}, "empty"),
    "two channels": (lambda: {"x": _x((4, 16, 16, 2))}, "1 or 3 channels"),
    "channels first": (lambda: {"x": _x((4, 3, 16, 16))}, "channels-first"),
    "not square": (lambda: {"x": _x((4, 16, 20))}, "square"),
    "too big": (lambda: {"x": _x((2, 72, 72))}, "between 8 and 64"),
    "too small": (lambda: {"x": _x((2, 4, 4))}, "between 8 and 64"),
    "float range": (lambda: {"x": _x((2, 8, 8), np.float32, 1.5)}, r"\[-1, 1\]"),
    "nan": (lambda: {"x": _x((2, 8, 8), np.float32, np.nan)}, "NaN"),
    "inf": (lambda: {"x": _x((2, 8, 8), np.float64, -np.inf)}, "infinite"),
    "int64 x": (lambda: {"x": _x((2, 8, 8), np.int64, 3)}, "uint8"),
    "no x": (lambda: {"images": _x((2, 8, 8))}, "'x'"),
    "y length": (lambda: {"x": _x((3, 8, 8)), "y": np.zeros(2, np.int64)}, r"shape \(3,\)"),
    "y 2-d": (lambda: {"x": _x((3, 8, 8)), "y": np.zeros((3, 1), np.int64)}, r"shape \(3,\)"),
    "y negative": (lambda: {"x": _x((3, 8, 8)), "y": np.array([0, -1, 2])}, ">= 0"),
    "y float": (lambda: {"x": _x((3, 8, 8)), "y": np.array([0.0, 1.0, 2.0])}, "integer"),
    "y bool": (lambda: {"x": _x((3, 8, 8)), "y": np.array([True, False, True])}, "integer"),
    "y huge": (lambda: {"x": _x((3, 8, 8)), "y": np.array([0, 1, 10**9])}, "below"),
    "pickled": (lambda: {"x": np.array([None, 1], dtype=object)}, "npz"),
}


@pytest.mark.parametrize("case", sorted(NPZ_ERRORS))
def test_npz_errors(case):
    make, message = NPZ_ERRORS[case]
    with pytest.raises(DataError, match=message):
        load_npz(io.BytesIO(npz_bytes(**make())))


def test_npz_size_limits_and_bad_files(tmp_path):
    data = npz_bytes(x=_x((10, 16, 16)))
    with pytest.raises(DataError, match="limit"):
        load_npz(io.BytesIO(data), max_bytes=len(data) - 1)
    # Small on disk, large once decompressed: refused before it is loaded.
    bomb = npz_bytes(compressed=True, x=_x((200, 64, 64)))
    assert len(bomb) < 100_000
    with pytest.raises(DataError, match="arrays in the npz file take"):
        load_npz(io.BytesIO(bomb), max_bytes=100_000)
    with pytest.raises(DataError, match="empty"):
        load_npz(io.BytesIO(b""))
    with pytest.raises(DataError, match="not a readable"):
        load_npz(io.BytesIO(b"this is not a zip file at all"))
    single = io.BytesIO()
    np.save(single, _x((2, 8, 8)))
    single.seek(0)
    with pytest.raises(DataError, match="npz archive"):
        load_npz(single)
    with pytest.raises(DataError, match="cannot read"):
        load_npz(tmp_path / "missing.npz")
    path = tmp_path / "gray.npz"
    path.write_bytes(data)
    with pytest.raises(DataError, match="channel"):
        build_dataset(npz_spec(path, channels=3), offline_config(tmp_path))
    with pytest.raises(DataError, match="limit"):
        build_dataset(npz_spec(path), DataConfig(max_npz_bytes=100, mirrors={"mnist": []}))
    with pytest.raises(DataError, match="npz file was given"):
        build_dataset(DatasetSpec(name="ring8"), offline_config(tmp_path), npz_file=io.BytesIO(data))


# --------------------------------------------------------------------------------------------
# Sampler state and evaluation batches
# --------------------------------------------------------------------------------------------


def _npz_dataset(tmp_path, seed: int) -> ImageDataset:
    x = np.random.default_rng(0).integers(0, 256, size=(50, 8, 8), dtype=np.uint8)
    data = npz_bytes(x=x, y=np.arange(50) % 5)
    return build_dataset(npz_spec(), offline_config(tmp_path), seed=seed, npz_file=io.BytesIO(data))


@pytest.mark.parametrize("kind", ["ring8", "npz"])
def test_sampler_state_round_trip_is_bit_exact(tmp_path, kind):
    def make(seed: int):
        if kind == "npz":
            return _npz_dataset(tmp_path, seed)
        return build_dataset(DatasetSpec(name=kind), offline_config(tmp_path), seed=seed)

    first = make(seed=7)
    for _ in range(3):
        first.sample(16)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    expected = [first.sample(16) for _ in range(3)]

    buffer.seek(0)
    resumed = make(seed=123)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for (x, y), (x_ref, y_ref) in zip([resumed.sample(16) for _ in range(3)], expected):
        assert torch.equal(x, x_ref)
        assert (y is None and y_ref is None) or torch.equal(y, y_ref)

    # Same seed, same stream; another seed, another stream.
    assert torch.equal(make(seed=7).sample(16)[0], make(seed=7).sample(16)[0])
    assert not torch.equal(make(seed=7).sample(16)[0], make(seed=8).sample(16)[0])
    with pytest.raises(ValueError):
        resumed.load_state_dict({})


def test_real_batch_is_deterministic_and_leaves_training_rng_alone(tmp_path):
    a, b = _npz_dataset(tmp_path, seed=1), _npz_dataset(tmp_path, seed=1)
    x1, y1 = a.real_batch(20, seed=5)
    x2, y2 = a.real_batch(20, seed=5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, a.real_batch(20, seed=6)[0])
    assert torch.equal(a.sample(16)[0], b.sample(16)[0])  # a's real_batch calls did not advance it
    # More than the dataset holds: every example used twice.
    x_all, _ = a.real_batch(100, seed=0)
    matches = (x_all.flatten(1)[:, None] == a.images.flatten(1)[None]).all(dim=2)
    assert matches.sum(dim=0).tolist() == [2] * 50

    ring = MixtureDataset("ring8", seed=0)
    torch.testing.assert_close(ring.real_batch(10, seed=3)[0], ring.real_batch(10, seed=3)[0])
    state = ring.generator.get_state()
    ring.real_batch(10, seed=4)
    assert torch.equal(state, ring.generator.get_state())


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------


def test_fingerprint_identifies_the_data(tmp_path):
    config = offline_config(tmp_path)
    mnist = dataset_fingerprint(DatasetSpec(name="mnist"), config)
    assert len(mnist) == 16 and mnist == dataset_fingerprint(DatasetSpec(name="mnist"), config)
    others = {
        dataset_fingerprint(DatasetSpec(name="mnist", image_size=32), config),
        dataset_fingerprint(DatasetSpec(name="fashion-mnist"), config),
        dataset_fingerprint(DatasetSpec(name="ring8"), config),
        dataset_fingerprint(DatasetSpec(name="grid25"), config),
    }
    assert mnist not in others and len(others) == 4

    path = tmp_path / "user.npz"
    path.write_bytes(npz_bytes(x=_x((4, 8, 8))))
    before = dataset_fingerprint(npz_spec(path), config)
    path.write_bytes(npz_bytes(x=_x((4, 8, 8), fill=1)))
    assert dataset_fingerprint(npz_spec(path), config) != before
    shutil.copy(path, tmp_path / "copy.npz")
    assert dataset_fingerprint(npz_spec(tmp_path / "copy.npz"), config) == dataset_fingerprint(
        npz_spec(path), config
    )
