"""gan_core.data.archive: what an image archive may hold, and every way it is refused."""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from gan_core.data.archive import (
    ArchiveLimits,
    ArchiveReader,
    class_folders,
    inspect_archive,
    iter_members,
)
from gan_core.data.errors import ArchiveError, DataError


def png(colour="red", size=(20, 12)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def jpeg(colour="blue") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, "JPEG")
    return out.getvalue()


def webp(colour="green") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, "WEBP")
    return out.getvalue()


def make_zip(path: Path, members: dict[str, bytes], method=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode="w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


MIXED = {
    "shapes/circle/a.png": png("red"),
    "shapes/circle/b.jpg": jpeg(),
    "shapes/square/c.webp": webp(),
    "shapes/square/broken.png": b"\x89PNG not really",
    "shapes/notes.txt": b"hello",
    "__MACOSX/shapes/._a.png": b"apple double",
    "shapes/.DS_Store": b"finder",
}


def reason(excinfo) -> str:
    return excinfo.value.reason


# ---- what a good archive holds -------------------------------------------------------------------


def test_zip_summary_counts_images_skipped_classes_and_bytes(tmp_path):
    summary = inspect_archive(make_zip(tmp_path / "a.zip", MIXED))
    counted = {k: v for k, v in MIXED.items() if "__MACOSX" not in k and ".DS_Store" not in k}
    assert summary.as_dict() == {
        "files": 5, "images": 3, "skipped": 2, "classes": ["circle", "square"],
        "bytes": sum(len(v) for v in counted.values()),
    }


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
def test_tar_in_every_compression_gives_the_same_summary(tmp_path, mode, suffix):
    path = make_tar(tmp_path / f"a{suffix}", list(MIXED.items()), mode=mode)
    summary = inspect_archive(path)
    assert (summary.files, summary.images, summary.skipped, summary.classes) == (5, 3, 2, ["circle", "square"])


def test_folder_is_read_like_an_archive(tmp_path):
    root = tmp_path / "pics"
    for name, data in MIXED.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    summary = inspect_archive(root)
    assert (summary.files, summary.images, summary.skipped, summary.classes) == (5, 3, 2, ["circle", "square"])
    names = [name for name, _ in iter_members(root)]
    assert names == sorted(names)  # a folder is read in a stable order


def test_members_come_back_as_relative_names_with_their_bytes(tmp_path):
    path = make_zip(tmp_path / "a.zip", {"x/1.png": png(), "x/big.txt": b"t"})
    assert dict(iter_members(path)) == {"x/1.png": png(), "x/big.txt": None}  # non-images unread


def test_class_folders_drop_a_shared_wrapping_folder_only():
    assert class_folders(["d/a/1.png", "d/b/2.png"]) == (["a", "b"], ["a", "b"])
    assert class_folders(["a/1.png", "b/x/2.png"]) == (["a", "b"], ["a", "b"])  # nested folders stay in their class
    assert class_folders(["only/1.png", "only/2.png"]) == (["only"], ["only", "only"])  # one folder: one class
    assert class_folders(["1.png", "a/2.png"]) == (["a"], [None, "a"])  # a root image has no class


# ---- refusals ------------------------------------------------------------------------------------


def test_empty_archives_are_refused(tmp_path):
    with pytest.raises(ArchiveError) as nothing:
        inspect_archive(make_zip(tmp_path / "empty.zip", {}))
    assert reason(nothing) == "empty"
    with pytest.raises(ArchiveError) as no_images:
        inspect_archive(make_tar(tmp_path / "t.tar.gz", [("a.txt", b"x"), ("b.png", b"not a png")]))
    assert reason(no_images) == "empty"
    assert isinstance(no_images.value, DataError)  # the service's DataError handling covers it


def test_not_an_archive_is_unreadable(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"this is no archive at all" * 40)
    with pytest.raises(ArchiveError) as excinfo:
        inspect_archive(path)
    assert reason(excinfo) == "unreadable"


def test_truncated_tar_gz_is_unreadable(tmp_path):
    path = make_tar(tmp_path / "t.tar.gz", [(f"{i}.png", png(size=(200, 200 + i))) for i in range(5)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArchiveError) as excinfo:
        list(iter_members(path))
    assert reason(excinfo) == "unreadable"


def test_zip_bomb_by_compression_ratio(tmp_path):
    path = make_zip(tmp_path / "bomb.zip", {"a.png": png(), "zeros.png": b"\0" * (20 * 1024**2)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(ArchiveError) as excinfo:
        list(iter_members(path))
    assert reason(excinfo) == "zip_bomb"
    assert "zeros.png" in str(excinfo.value)


def test_small_compressible_members_are_no_bomb(tmp_path):
    path = make_zip(tmp_path / "ok.zip", {"a.png": png(), "blank.txt": b"\0" * 200_000}, zipfile.ZIP_DEFLATED)
    assert inspect_archive(path).images == 1


def test_zip_declaring_less_than_it_holds_yields_no_more_than_declared(tmp_path):
    """A member whose headers under-state its size: never more bytes than declared come out."""
    data = png(size=(64, 64))
    path = make_zip(tmp_path / "liar.zip", {"liar.png": data, "ok.png": png()})
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("liar.png")
    small = 10
    # local header: uncompressed size at offset 22; central directory entry: at offset 24
    struct.pack_into("<I", raw, info.header_offset + 22, small)
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, small)
    path.write_bytes(bytes(raw))
    members = dict(iter_members(path))
    assert members["liar.png"] is None or len(members["liar.png"]) <= small
    summary = inspect_archive(path)
    assert summary.images == 1 and summary.skipped == 1


def test_total_uncompressed_bytes_over_the_limit(tmp_path):
    path = make_zip(tmp_path / "big.zip", {f"{i}.png": png() + b"\0" * 5000 for i in range(10)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(ArchiveError) as excinfo:
        list(iter_members(path, ArchiveLimits(max_bytes=30_000)))
    assert reason(excinfo) == "too_large"


def test_archive_file_over_max_bytes(tmp_path):
    path = make_zip(tmp_path / "a.zip", {"a.png": png()})
    with pytest.raises(ArchiveError) as excinfo:
        inspect_archive(path, ArchiveLimits(max_bytes=path.stat().st_size - 1))
    assert reason(excinfo) == "too_large"


def test_gzip_bomb_in_a_tar(tmp_path):
    """A .tar.gz whose content outgrows the limit is stopped while decompressing."""
    path = make_tar(tmp_path / "bomb.tar.gz", [("a.png", png()), ("zeros.bin", b"\0" * (70 * 1024**2))])
    assert path.stat().st_size < 200_000
    with pytest.raises(ArchiveError) as ratio:
        list(iter_members(path, ArchiveLimits(max_ratio=50)))
    assert reason(ratio) == "zip_bomb"
    with pytest.raises(ArchiveError) as total:
        list(iter_members(path, ArchiveLimits(max_bytes=10 * 1024**2, max_ratio=10_000)))
    assert reason(total) == "too_large"


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_more_files_than_allowed(tmp_path, kind):
    members = {f"{i}.png": png() for i in range(6)}
    path = make_zip(tmp_path / "a.zip", members) if kind == "zip" else make_tar(tmp_path / "a.tar", list(members.items()), "w")
    with pytest.raises(ArchiveError) as excinfo:
        list(iter_members(path, ArchiveLimits(max_files=5)))
    assert reason(excinfo) == "too_many_files"
    assert len(list(iter_members(path, ArchiveLimits(max_files=6)))) == 6


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/etc/evil.png", "C:/evil.png", "..\\evil.png"])
def test_path_traversal_in_a_zip(tmp_path, name):
    path = make_zip(tmp_path / "a.zip", {"ok.png": png(), name: png()})
    with pytest.raises(ArchiveError) as excinfo:
        list(iter_members(path))
    assert reason(excinfo) == "unsafe_path"


@pytest.mark.parametrize("name", ["../evil.png", "x/../../evil.png", "/tmp/evil.png"])
def test_path_traversal_in_a_tar(tmp_path, name):
    path = make_tar(tmp_path / "a.tar.gz", [("ok.png", png()), (name, png())])
    with pytest.raises(ArchiveError) as excinfo:
        inspect_archive(path)
    assert reason(excinfo) == "unsafe_path"
    assert not (tmp_path.parent / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("member,expected", [
    (_special("link.png", tarfile.SYMTYPE, "/etc/passwd"), "link"),
    (_special("hard.png", tarfile.LNKTYPE, "ok.png"), "link"),
    (_special("dev", tarfile.CHRTYPE), "special_file"),
    (_special("disk", tarfile.BLKTYPE), "special_file"),
    (_special("pipe", tarfile.FIFOTYPE), "special_file"),
])
def test_links_and_devices_in_a_tar(tmp_path, member, expected):
    path = make_tar(tmp_path / "a.tar", [("ok.png", png()), member], mode="w")
    with pytest.raises(ArchiveError) as excinfo:
        inspect_archive(path)
    assert reason(excinfo) == expected


def test_symlink_in_a_zip(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok.png", png())
        info = zipfile.ZipInfo("link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError) as excinfo:
        inspect_archive(path)
    assert reason(excinfo) == "link"


def test_symlink_in_a_folder(tmp_path):
    root = tmp_path / "pics"
    root.mkdir()
    (root / "ok.png").write_bytes(png())
    os.symlink("/etc/passwd", root / "passwd.png")
    with pytest.raises(ArchiveError) as excinfo:
        inspect_archive(root)
    assert reason(excinfo) == "link"


def test_reader_counts_files_and_bytes(tmp_path):
    path = make_tar(tmp_path / "a.tar.gz", [("a.png", png()), ("b.txt", b"12345")])
    reader = ArchiveReader(path)
    assert len(list(reader)) == 2
    assert (reader.files, reader.bytes) == (2, len(png()) + 5)


def test_gzip_file_that_is_no_tar(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(gzip.compress(b"definitely not a tar header" * 100))
    with pytest.raises(ArchiveError) as excinfo:
        inspect_archive(path)
    assert reason(excinfo) in ("unreadable", "empty")
