"""Training data: the built-in datasets, user .npz files and a fast in-memory sampler.

Datasets
--------
* ``mnist``, ``fashion-mnist``: IDX (gzip) files. They are looked up in ``DataConfig.data_dir``
  (one folder per dataset: ``<data_dir>/mnist/train-images-idx3-ubyte.gz``), then in
  ``DataConfig.cache_dir`` (same layout), and only then downloaded from the configured mirrors
  into the cache. Every file is verified before use, see ``KNOWN_FILES``.
* ``ring8``, ``grid25``: 2-D Gaussian mixtures sampled on the fly (not rescaled: their
  coordinates span about [-2, 2] and [-4, 4]).
* ``npz``: the user's ``x`` (N×H×W or N×H×W×C, uint8 or float in [-1, 1]) and optional ``y``.
* ``image_folder``: PNG/JPEG/WebP pictures in a zip or tar archive or a folder, checked by
  ``archive``, decoded once by ``folder`` into a cache keyed by the source's sha256, sampled from
  the memory-mapped uint8 array (``PixelDataset``).

Images are float32 N×C×H×W in [-1, 1] (uint8 is mapped by ``x / 127.5 - 1``), resized once at
load time when the spec asks for another size.

Sampling
--------
The whole training set lives in one tensor on the target device; ``Dataset.sample`` draws
indices with ``torch.randint`` from the dataset's own ``torch.Generator``, i.e. *with
replacement* (no epochs, no DataLoader, no per-step Python work). The generator state is the
only sampler state, so ``state_dict()``/``load_state_dict()`` make resumed runs bit-exact.

Modules: ``archive`` (reading untrusted archives), ``folder`` (decode + cache),
``fetch`` (files from the data dir, cache or mirrors, checksums, ``DataConfig``),
``formats`` (IDX, npz), ``datasets`` (the in-memory datasets and sampler, ``build_dataset``,
``dataset_fingerprint``), ``errors``. Every public name is importable from ``gan_core.data``.
"""

from gan_core.data.archive import ArchiveLimits, ArchiveSummary, inspect_archive
from gan_core.data.datasets import (
    Dataset,
    ImageDataset,
    MixtureDataset,
    PixelDataset,
    build_dataset,
    dataset_fingerprint,
    load_test_images,
    mixture_params,
)
from gan_core.data.errors import ArchiveError, ChecksumError, DataError, DatasetError, DownloadError
from gan_core.data.fetch import DEFAULT_MIRRORS, KNOWN_FILES, DataConfig, KnownFile, dataset_file
from gan_core.data.formats import MAX_CLASSES, load_idx_split, load_npz

__all__ = [
    "DEFAULT_MIRRORS",
    "KNOWN_FILES",
    "MAX_CLASSES",
    "ArchiveError",
    "ArchiveLimits",
    "ArchiveSummary",
    "ChecksumError",
    "DataConfig",
    "DataError",
    "Dataset",
    "DatasetError",
    "DownloadError",
    "ImageDataset",
    "KnownFile",
    "MixtureDataset",
    "PixelDataset",
    "build_dataset",
    "dataset_file",
    "dataset_fingerprint",
    "inspect_archive",
    "load_idx_split",
    "load_npz",
    "load_test_images",
    "mixture_params",
]
