"""Face photos that ship inside Debian packages: fetched once by `make setup`, never at run time.

    python -m avpenet.synth.photos        # fetch every photo not yet here (what `make setup` runs)

Why not `apt-get install`: the package that ships a photo may pull in hundreds of others (kphotoalbum: 270)
and needs root. The photo is instead read out of the package's .deb, taken from the Debian archive (a
registry, as PyPI is) and pinned by the .deb's sha256 and the photo's own, and only the photo is kept, under
the venv's share/avpenet/photos/. Source and licence of each photo: docs/DATA.md, *Face*.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ARCHIVE = "https://deb.debian.org/debian/"


@dataclass(frozen=True)
class DebPhoto:
    """One file of a Debian package, pinned."""

    package: str  # name and version, for messages and docs
    pool_path: str  # the .deb under ARCHIVE
    deb_sha256: str
    member: str  # the file inside the package's data archive
    sha256: str


PHOTOS = {
    "jesper_pedersen": DebPhoto(
        package="kphotoalbum 5.9.1-1 (Debian 12)",
        pool_path="pool/main/k/kphotoalbum/kphotoalbum_5.9.1-1_amd64.deb",
        deb_sha256="00f8b26b5db1beb30a822d15f464b3c68ffa556d267870aa98a59aaaaf81ec43",
        member="./usr/share/kphotoalbum/demo/jesper_2.jpg",
        sha256="e7c5112cad4076c0b16f7a822b0bf559859ad84077705442769afb91c81bcb1b",
    ),
}


def path(name: str) -> Path:
    return Path(sys.prefix) / "share" / "avpenet" / "photos" / f"{name}{Path(PHOTOS[name].member).suffix}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(name: str) -> bytes:
    """The photo's bytes, checked against its pin; FileNotFoundError saying how to fetch it when absent."""
    p = path(name)
    if not p.is_file():
        raise FileNotFoundError(
            f"face photo {name!r} is not here ({p}): run `make setup` or `python -m avpenet.synth.photos`, "
            f"which takes it from the Debian package {PHOTOS[name].package}"
        )
    data = p.read_bytes()
    if _sha256(data) != PHOTOS[name].sha256:
        raise ValueError(f"{p}: not the pinned photo (sha256 differs); delete it and fetch it again")
    return data


def deb_member(deb: bytes, member: str) -> bytes:
    """One file of a .deb: an ar archive whose data.tar.* holds the package's files."""
    if not deb.startswith(b"!<arch>\n"):
        raise ValueError("not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        body = deb[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise ValueError(f"{member}: not a regular file in the package")
                return extracted.read()
        pos += 60 + size + size % 2
    raise ValueError("the package has no data archive")


def fetch(name: str, archive: str = ARCHIVE) -> Path:
    """Download the pinned package, check it, keep only the photo. A photo already here is not fetched."""
    spec, p = PHOTOS[name], path(name)
    if p.is_file() and _sha256(p.read_bytes()) == spec.sha256:
        return p
    with urllib.request.urlopen(archive + spec.pool_path, timeout=120) as response:
        deb = response.read()
    if _sha256(deb) != spec.deb_sha256:
        raise ValueError(f"{archive + spec.pool_path}: not the pinned package (sha256 differs)")
    photo = deb_member(deb, spec.member)
    if _sha256(photo) != spec.sha256:
        raise ValueError(f"{spec.member} in {spec.package}: not the pinned photo (sha256 differs)")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".part")
    tmp.write_bytes(photo)
    tmp.replace(p)
    return p


def main() -> int:
    for name in PHOTOS:
        try:
            print(f"{name}: {fetch(name)}")
        except (OSError, ValueError) as exc:
            print(f"avpenet.synth.photos: {name}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
