"""avpenet.synth.photos: a face photo is read out of its pinned Debian package, checked, and kept alone.

The packages here are built in memory (ar archive, data.tar.xz) and served from a file:// archive, so the
tests need no network; `make setup` fetches the real one."""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from pathlib import Path

import pytest

from avpenet.synth import photos

MEMBER = "./usr/share/demo/face.jpg"
PHOTO = b"\xff\xd8 a jpeg's bytes"


def _ar_entry(name: str, body: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
    return header + body + (b"\n" if len(body) % 2 else b"")


def _deb(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return (
        b"!<arch>\n" + _ar_entry("debian-binary", b"2.0\n") + _ar_entry("control.tar.xz", b"x")
        + _ar_entry("data.tar.xz", data.getvalue())
    )  # fmt: skip


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A file:// archive holding one package, PHOTOS naming its photo, and a venv prefix of its own."""
    deb = _deb({"./usr/share/demo/other.txt": b"other", MEMBER: PHOTO})
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "demo.deb").write_bytes(deb)
    spec = photos.DebPhoto(
        "demo 1.0",
        "pool/demo.deb",
        hashlib.sha256(deb).hexdigest(),
        MEMBER,
        hashlib.sha256(PHOTO).hexdigest(),
    )
    monkeypatch.setattr(photos, "PHOTOS", {"demo": spec})
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    return tmp_path.as_uri() + "/", tmp_path


def test_the_photo_is_read_out_of_its_package_and_kept_alone(archive) -> None:
    url, root = archive
    kept = photos.fetch("demo", url)
    assert kept == root / "venv" / "share" / "avpenet" / "photos" / "demo.jpg"
    assert photos.read("demo") == PHOTO
    assert sorted(p.name for p in kept.parent.iterdir()) == ["demo.jpg"]  # no .deb, no other file
    (root / "pool" / "demo.deb").unlink()
    assert photos.fetch("demo", url) == kept  # here already: nothing is downloaded


def test_a_package_or_photo_that_is_not_the_pinned_one_is_refused(archive, monkeypatch) -> None:
    url, root = archive
    (root / "pool" / "demo.deb").write_bytes(_deb({MEMBER: PHOTO + b"!"}))
    with pytest.raises(ValueError, match="not the pinned package"):
        photos.fetch("demo", url)
    spec = photos.PHOTOS["demo"]
    deb = (root / "pool" / "demo.deb").read_bytes()
    monkeypatch.setitem(photos.PHOTOS, "demo", photos.DebPhoto(
        spec.package, spec.pool_path, hashlib.sha256(deb).hexdigest(), spec.member, spec.sha256
    ))  # fmt: skip
    with pytest.raises(ValueError, match="not the pinned photo"):
        photos.fetch("demo", url)
    assert not photos.path("demo").exists()


def test_a_missing_or_changed_photo_says_what_to_do(archive) -> None:
    url, _ = archive
    with pytest.raises(FileNotFoundError, match="run `make setup`"):
        photos.read("demo")
    photos.fetch("demo", url).write_bytes(b"edited")
    with pytest.raises(ValueError, match="delete it and fetch it again"):
        photos.read("demo")


def test_what_is_not_a_package_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Debian package"):
        photos.deb_member(b"PK\x03\x04 a zip", MEMBER)
    with pytest.raises(KeyError):  # tarfile's own error for a name the package lacks
        photos.deb_member(_deb({MEMBER: PHOTO}), "./usr/share/demo/absent.jpg")
