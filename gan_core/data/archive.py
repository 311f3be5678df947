"""Reading a user's image archive (zip, tar, .tar.gz/.bz2/.xz) or folder without trusting it.

Nothing is ever extracted: members are read one at a time into memory (each at most
``MAX_MEMBER_BYTES``) and handed to the caller as ``(name, bytes)``, so an archive cannot write
anywhere, whatever its member names say. It is still refused as a whole, with an
``ArchiveError`` whose ``reason`` says why, when it

* is larger than ``limits.max_bytes`` on disk, or its members add up to more (declared sizes
  first, then the bytes actually read, so a zip that under-declares is caught too);
* holds more than ``limits.max_files`` files;
* looks like a zip bomb: a member over 1 MiB compressed more than ``limits.max_ratio`` : 1,
  or a compressed tar whose content outgrows its file by that ratio;
* names a member with an absolute path, a drive letter or a ``..`` component;
* holds symlinks or hardlinks (zip or tar), devices, fifos or sparse members (tar);
* holds no PNG, JPEG or WebP image (``inspect_archive`` only).

Metadata that archivers add (``__MACOSX/``, dot files such as ``.DS_Store`` and AppleDouble
``._x.png``) is ignored: not counted as a file, not read.

Class folders (``labels: folders``): images are grouped by their first directory after the
folders every image shares, e.g. ``shapes/circle/1.png`` and ``shapes/square/2.png`` give the
classes ``circle`` and ``square`` (a single wrapping folder is not a class).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from gan_core.data.errors import ArchiveError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # what Pillow must recognise in the bytes
# One image file larger than this is not a training picture (a 128 px crop needs far less):
# it is skipped unread instead of being held in memory.
MAX_MEMBER_BYTES = 64 * 1024**2
# Below this a high compression ratio is harmless (a blank 256 KiB bitmap compresses 1000:1).
_RATIO_FLOOR_BYTES = 1024**2
# Tar headers and padding: at most 1.5 KiB per member besides the data (header, pax, padding).
_TAR_OVERHEAD_PER_MEMBER = 3 * 512
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """What a deployment accepts (GANFORGE_MAX_DATASET_FILES, GANFORGE_MAX_DATASET_BYTES)."""

    max_files: int = 100_000
    max_bytes: int = 2 * 1024**3  # the archive on disk, and the sum of its members uncompressed
    max_ratio: float = 100.0  # uncompressed / compressed, per large zip member and per compressed tar

    def __post_init__(self) -> None:
        if self.max_files < 1 or self.max_bytes < 1 or self.max_ratio <= 1:
            raise ValueError("archive limits must be positive (max_ratio above 1)")


@dataclass(frozen=True)
class ArchiveSummary:
    """What an archive holds, as the API and the job view show it."""

    files: int  # regular files (metadata such as __MACOSX/ and dot files not counted)
    images: int  # files whose bytes Pillow recognises as PNG, JPEG or WebP
    skipped: int  # the other files: other formats, unreadable or too large images
    classes: list[str] = field(default_factory=list)  # class folders, sorted (empty: no folders)
    bytes: int = 0  # all files' uncompressed sizes

    def as_dict(self) -> dict:
        return asdict(self)


# ---- names -------------------------------------------------------------------------------------


def safe_member_name(name: str) -> str | None:
    """The member's relative POSIX path, or None for archiver metadata to ignore.

    Raises ArchiveError for a path that points outside the archive's own tree."""
    if "\x00" in name:
        raise ArchiveError("unsafe_path", f"member {name!r} has a NUL byte in its name")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) >= 2 and posix[1] == ":"):
        raise ArchiveError("unsafe_path", f"member {name!r} has an absolute path")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError("unsafe_path", f"member {name!r} points outside the archive ('..')")
    if not parts:
        return None
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return "/".join(parts)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def class_folders(names: list[str]) -> tuple[list[str], list[str | None]]:
    """Sorted class names and each name's class (None: not inside a class folder).

    Leading folders that every name shares are dropped first, while each name keeps a folder
    below them (a single wrapping folder is not a class)."""
    dirs = [list(PurePosixPath(n).parts[:-1]) for n in names]
    depth = 0
    while dirs and all(len(d) >= depth + 2 for d in dirs) and len({d[depth] for d in dirs}) == 1:
        depth += 1
    of = [d[depth] if len(d) > depth else None for d in dirs]
    return sorted({c for c in of if c is not None}), of


# ---- reading members ---------------------------------------------------------------------------


class _Budget:
    """Counts files and bytes against the limits as members go by."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def add_file(self, name: str, size: int) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise ArchiveError("too_many_files", f"the archive holds more than {self.limits.max_files} files")
        self.add_bytes(size)

    def add_bytes(self, size: int) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise ArchiveError(
                "too_large", f"the archive's files add up to more than {self.limits.max_bytes} bytes uncompressed"
            )


def _read_capped(stream: BinaryIO, declared: int, name: str) -> bytes:
    """Exactly the member's declared bytes; more is a lie (a bomb under-declaring its size)."""
    data = stream.read(declared + 1)
    if len(data) > declared:
        raise ArchiveError("zip_bomb", f"member {name!r} holds more bytes than the {declared} it declares")
    return data


def _check_file_size(path: Path, limits: ArchiveLimits) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ArchiveError("unreadable", f"cannot read the archive: {exc.strerror or exc}") from None
    if size > limits.max_bytes:
        raise ArchiveError("too_large", f"the archive has {size} bytes; the limit is {limits.max_bytes}")
    return size


def _zip_members(path: Path, limits: ArchiveLimits, budget: _Budget) -> Iterator[tuple[str, bytes | None]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError("unreadable", f"not a readable zip archive: {exc}") from None
    with archive:
        infos = archive.infolist()
        # The central directory is read whole by zipfile: refuse an absurd one before walking it.
        if len(infos) > 2 * limits.max_files + 1000:
            raise ArchiveError("too_many_files", f"the archive holds more than {limits.max_files} files")
        members = []
        for info in infos:
            name = safe_member_name(info.filename)
            if name is None or info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ArchiveError("link", f"member {info.filename!r} is a symlink")
            if info.file_size > _RATIO_FLOOR_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise ArchiveError(
                    "zip_bomb", f"member {info.filename!r} expands {info.file_size} bytes from "
                    f"{info.compress_size} (more than {limits.max_ratio:g}:1)"
                )
            budget.add_file(name, info.file_size)  # declared sizes: refused before reading anything
            members.append((name, info))
        actual = _Budget(limits)  # the bytes really read, in case a declared size lies
        for name, info in members:
            if not is_image_name(name) or info.file_size > MAX_MEMBER_BYTES or info.flag_bits & 0x1:
                yield name, None  # not an image, too large, or encrypted: skipped unread
                continue
            try:
                with archive.open(info) as stream:
                    data = _read_capped(stream, info.file_size, name)
            except ArchiveError:
                raise
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error, lzma.LZMAError):
                # A CRC error, a truncated member, an unsupported method: that file is skipped.
                yield name, None
                continue
            actual.add_bytes(len(data))
            yield name, data


class _CappedReader(io.RawIOBase):
    """A decompressed tar stream that stops with ArchiveError past ``cap`` bytes: a gzip bomb
    cannot make tarfile read (or hold, for pax headers) more than the archive may contain."""

    def __init__(self, inner: BinaryIO, cap: int, compressed_size: int, max_ratio: float) -> None:
        self.inner, self.cap, self.read_bytes = inner, cap, 0
        self.inner_size = max(compressed_size, 1)
        self.ratio_cap = compressed_size * max_ratio if compressed_size else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        self.read_bytes += len(data)
        if self.read_bytes > self.cap:
            raise ArchiveError("too_large", f"the archive expands past {self.cap} bytes")
        if self.ratio_cap is not None and self.read_bytes > max(self.ratio_cap, 64 * _RATIO_FLOOR_BYTES):
            raise ArchiveError("zip_bomb", f"the archive expands more than {self.ratio_cap / self.inner_size:g}:1 "
                               "from its compressed size")
        buffer[: len(data)] = data
        return len(data)


def _open_tar_stream(path: Path, size: int, limits: ArchiveLimits) -> BinaryIO:
    with path.open("rb") as probe:
        magic = probe.read(6)
    raw = path.open("rb")
    if magic[:2] == b"\x1f\x8b":
        inner: BinaryIO = gzip.GzipFile(fileobj=raw)
    elif magic[:3] == b"BZh":
        inner = bz2.BZ2File(raw)
    elif magic == b"\xfd7zXZ\x00":
        inner = lzma.LZMAFile(raw)
    else:
        return raw  # a plain tar is no bigger than its file, which is within max_bytes
    cap = limits.max_bytes + _TAR_OVERHEAD_PER_MEMBER * (limits.max_files + 2)
    reader = _CappedReader(inner, cap, size, limits.max_ratio)
    return io.BufferedReader(reader, buffer_size=_CHUNK)


def _tar_members(path: Path, size: int, limits: ArchiveLimits, budget: _Budget) -> Iterator[tuple[str, bytes | None]]:
    stream = _open_tar_stream(path, size, limits)
    try:
        try:
            archive = tarfile.open(fileobj=stream, mode="r|")  # streaming: one pass, no seeking back
        except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
            raise ArchiveError("unreadable", f"not a readable zip or tar archive: {exc}") from None
        with archive:
            try:
                for member in archive:
                    name = safe_member_name(member.name)
                    if member.issym() or member.islnk():
                        raise ArchiveError("link", f"member {member.name!r} is a {'symlink' if member.issym() else 'hardlink'}")
                    if member.isdev() or member.isfifo():
                        raise ArchiveError("special_file", f"member {member.name!r} is a device or fifo")
                    if member.isdir() or name is None:
                        continue
                    if not member.isreg() or member.issparse():
                        raise ArchiveError("special_file", f"member {member.name!r} is not a regular file")
                    budget.add_file(name, member.size)
                    if not is_image_name(name) or member.size > MAX_MEMBER_BYTES:
                        yield name, None
                        continue
                    source = archive.extractfile(member)
                    data = _read_capped(source, member.size, name) if source is not None else b""
                    if len(data) < member.size:
                        raise ArchiveError("unreadable", f"member {member.name!r} is truncated")
                    yield name, data
            except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
                raise ArchiveError("unreadable", f"the tar archive is truncated or corrupt: {exc}") from None
    finally:
        stream.close()


def _folder_members(root: Path, limits: ArchiveLimits, budget: _Budget) -> Iterator[tuple[str, bytes | None]]:
    """A local folder (an S3 prefix downloaded by the service, or a user's own folder): the same
    rules, in sorted order; symlinks are refused (they may point anywhere on the host)."""
    found: list[tuple[str, Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for entry in sorted(dirnames + filenames):
            full = here / entry
            relative = full.relative_to(root).as_posix()
            if full.is_symlink():
                raise ArchiveError("link", f"{relative!r} is a symlink")
            if entry in dirnames:
                continue
            name = safe_member_name(relative)
            if name is None:
                continue
            mode = full.lstat()
            if not stat.S_ISREG(mode.st_mode):
                raise ArchiveError("special_file", f"{relative!r} is not a regular file")
            budget.add_file(name, mode.st_size)
            found.append((name, full, mode.st_size))
        dirnames[:] = [d for d in dirnames if not (d.startswith(".") or d == "__MACOSX")]
    for name, full, size in sorted(found):
        if not is_image_name(name) or size > MAX_MEMBER_BYTES:
            yield name, None
            continue
        with full.open("rb") as f:
            yield name, f.read(size)


class ArchiveReader:
    """Iterate over every file of a zip, tar (optionally gzip, bz2 or xz compressed) or folder as
    ``(relative name, bytes)``; bytes is None for a file skipped unread (not an image name,
    larger than MAX_MEMBER_BYTES, encrypted or damaged). Raises ArchiveError (see the module).
    After a full pass, ``files`` and ``bytes`` hold the counted totals.

    A zip is checked as a whole (names, declared sizes, ratios) before its first member is
    read; a tar is a stream, so its refusal may come after some members were yielded."""

    def __init__(self, path: str | os.PathLike[str], limits: ArchiveLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or ArchiveLimits()
        self._budget = _Budget(self.limits)

    @property
    def files(self) -> int:
        return self._budget.files

    @property
    def bytes(self) -> int:
        return self._budget.bytes

    def __iter__(self) -> Iterator[tuple[str, bytes | None]]:
        self._budget = _Budget(self.limits)
        if self.path.is_dir():
            return _folder_members(self.path, self.limits, self._budget)
        size = _check_file_size(self.path, self.limits)
        if zipfile.is_zipfile(self.path):
            return _zip_members(self.path, self.limits, self._budget)
        return _tar_members(self.path, size, self.limits, self._budget)


def iter_members(path: str | os.PathLike[str], limits: ArchiveLimits | None = None) -> Iterator[tuple[str, bytes | None]]:
    """``iter(ArchiveReader(path, limits))``."""
    return iter(ArchiveReader(path, limits))


def sniff_image(data: bytes) -> str | None:
    """The image format Pillow reads in ``data`` (PNG, JPEG, WEBP), from the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            found = image.format
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return found if found in IMAGE_FORMATS else None


def inspect_archive(path: str | os.PathLike[str], limits: ArchiveLimits | None = None) -> ArchiveSummary:
    """Check an archive (see the module) and count what it holds; images are recognised from
    their headers (decoding, which may still skip a damaged image, happens when a job loads it).
    Raises ArchiveError, with reason ``empty`` when no image is found."""
    reader = ArchiveReader(path, limits)
    image_names = [name for name, data in reader if data is not None and sniff_image(data) is not None]
    if not image_names:
        raise ArchiveError("empty", "the archive holds no PNG, JPEG or WebP image")
    classes, _ = class_folders(image_names)
    return ArchiveSummary(files=reader.files, images=len(image_names), skipped=reader.files - len(image_names),
                          classes=classes, bytes=reader.bytes)
