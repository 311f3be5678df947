"""What can go wrong with training data."""

from __future__ import annotations


class DataError(ValueError):
    """Bad user data, or a spec that does not fit the data."""


class ChecksumError(DataError):
    """A dataset file whose sha256 does not match, or a truncated / corrupt gzip file."""


class DownloadError(DataError):
    """A dataset file that is neither local nor downloadable from any configured mirror."""
