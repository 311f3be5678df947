import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "datasets"


def pytest_configure(config):
    # Small tensors everywhere: one intra-op thread avoids OpenMP contention on the 2-core machines.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding mnist/ (GANFORGE_DATA_DIR, else ../shared/datasets beside the checkout)."""
    path = Path(os.environ.get("GANFORGE_DATA_DIR", SHARED_DATA))
    if not (path / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST not found under {path}: set GANFORGE_DATA_DIR")
    return path


@pytest.fixture()
def data_config(data_dir, tmp_path):
    from gan_core.data import DataConfig

    return DataConfig(data_dir=data_dir, cache_dir=tmp_path / "cache")
