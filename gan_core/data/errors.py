"""What can go wrong with training data."""

from __future__ import annotations


class DataError(ValueError):
    """Bad user data, or a spec that does not fit the data."""


# The name the datasets contract (issue 14) uses for the base class of every data error.
DatasetError = DataError


class ChecksumError(DataError):
    """A dataset file whose sha256 does not match, or a truncated / corrupt gzip file."""


class DownloadError(DataError):
    """A dataset file that is neither local nor downloadable from any configured mirror."""


class ArchiveError(DataError):
    """An image archive (zip, tar, folder) refused before anything is decoded.

    ``reason`` is a short stable code a service can map to a status or show as is:
    ``too_large`` (archive or total uncompressed bytes over the limit), ``too_many_files``,
    ``zip_bomb`` (compression ratio, or a member larger than it declares), ``unsafe_path``
    (absolute, ``..``, drive letters), ``link`` (symlink or hardlink), ``special_file``
    (device, fifo, sparse member), ``empty`` (no PNG/JPEG/WebP image), ``unreadable`` (not a
    zip or tar, truncated, encrypted headers), ``labels`` (class folders that do not fit).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
