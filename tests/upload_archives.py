"""Small image archives made in the tests (uploads of POST /v1/datasets): real PNGs in class
folders, a corrupt file, and the hostile ones (a zip bomb, paths that leave the archive, symlinks).

Imported by tests/api, tests/integration, tests/unit and tests/browser through
``sys.path.insert(0, <tests folder>)``.
"""

from __future__ import annotations

import io
import tarfile
import zipfile

from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}


def png(colour: tuple[int, int, int], size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


def image_members(per_class: int = 3, corrupt: int = 1) -> dict[str, bytes]:
    """``{path: bytes}``: ``per_class`` PNGs in each of three class folders and ``corrupt``
    files named .png that are not images."""
    members = {f"{name}/{i}.png": png(colour) for name, colour in COLOURS.items() for i in range(per_class)}
    members.update({f"red/broken-{i}.png": b"\x89PNG\r\n\x1a\n not really a png" for i in range(corrupt)})
    return members


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w", symlinks: dict[str, str] | None = None) -> bytes:
    """A tar (``mode`` "w:gz" for a gzip tar) of ``members``, plus ``symlinks`` {name: target}."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return out.getvalue()


def zip_bomb(megabytes: int = 64) -> bytes:
    """A zip whose one member inflates ~1000:1 (``megabytes`` MiB of zeros in about 1/1000 of that)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("red/huge.png", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(megabytes):
                member.write(block)
    return out.getvalue()


def empty_zip() -> bytes:
    return zip_bytes({})
