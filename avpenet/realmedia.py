"""The real-media smoke set: real faces and real human vocalisations from installed packages, muxed into MP4s.

    python -m avpenet.realmedia build --out DIR      # the A/V clips + clips.csv (seconds, nothing downloaded)
    python -m avpenet.realmedia detect               # the tracker's detection rate per size/angle/lighting

Everything the reference model ever saw is synthetic; this set is the first real face and the first real
voice it meets. Sources (licences in docs/DATA.md), all read from installed packages, never downloaded:
- faces: two real photographs, ``skimage.data.astronaut()`` (Eileen Collins) and matplotlib's
  ``grace_hopper.jpg`` (both public domain), as shipped — smile and all, not neutralised as the synthetic
  renderer does; animated with a small head motion (roll, shift, zoom), and for the detection report at three
  face sizes, five roll/yaw angles and four lightings;
- voices: recorded human vocalisations of three voice actors in Debian's ``openarena-data`` and
  ``openarena-081-players`` (GPL-2+): pain grunts at four intensities and death screams (distress), and
  for non-distress the same actor's taunt and, for one actor, plain speech phrases.
Each clip pairs one face with one voice (the same face for a voice's distress and calm clip), so a distress
clip and a calm clip of one "person" differ only in the sound. Two more clips exercise masking: a silent
track with a face (audio masked) and a pain track over a frame with no face (visual masked).
"""

from __future__ import annotations

import argparse
import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avpenet import contract as C

OPENARENA = Path("/usr/share/games/openarena")
DEBIAN_PACKAGES = ("openarena-data", "openarena-081-players")  # installed by `make realmedia-packages`
CLIP_SECONDS = 4.0
GAP_S = 0.15
FRAME_SIZE = 320


@dataclass(frozen=True)
class Voice:
    name: str  # the OpenArena player model
    actor: str  # the credit file's name
    pk3: str  # archive under OPENARENA
    distress: tuple[str, ...]  # members, in order
    calm: tuple[tuple[str, str], ...]  # (archive, member)
    face: str  # the photo it is paired with


def _player(model: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"sound/player/{model}/{n}.wav" for n in names)


PAIN = ("pain25_1", "pain50_1", "pain75_1", "pain100_1", "death1", "death2")
SARGE_SPEECH = ("affirmative", "followme", "imgoingin", "rogerthat", "whereareyou", "ok")
VOICES = (
    Voice(
        "sarge", "RottKing", "baseoa/pak0.pk3", _player("sarge", PAIN),
        (("baseoa/pak0.pk3", "sound/player/sarge/taunt.wav"),
         *(("missionpack/mp-pak0.pk3", f"sound/voices/rott/{w}.ogg") for w in SARGE_SPEECH)),
        "astronaut",
    ),
    Voice(
        "major", "pixie", "baseoa/pak2-players.pk3", _player("major", PAIN),
        (("baseoa/pak2-players.pk3", "sound/player/major/taunt.wav"),), "grace_hopper",
    ),
    Voice(
        "kyonshi", "aeri_s", "baseoa/pak2-players.pk3", _player("kyonshi", PAIN),
        (("baseoa/pak2-players.pk3", "sound/player/kyonshi/taunt.wav"),), "grace_hopper",
    ),
)  # fmt: skip
FACES = ("astronaut", "grace_hopper")


def _missing() -> str:
    return (
        f"the real-media sounds come from Debian's {' and '.join(DEBIAN_PACKAGES)} (under {OPENARENA}); "
        f"install them: apt-get install {' '.join(DEBIAN_PACKAGES)} (or: make realmedia-packages)"
    )


def available() -> bool:
    return all((OPENARENA / a).exists() for a in ("baseoa/pak0.pk3", "baseoa/pak2-players.pk3"))


def read_sound(archive: str, member: str) -> np.ndarray:
    """One sound of a game archive as float32 mono at contract.SAMPLE_RATE (decoded in memory)."""
    from avpenet.features.audio import load_audio

    if not available():
        raise FileNotFoundError(_missing())
    with zipfile.ZipFile(OPENARENA / archive) as z:
        lookup = {n.lower(): n for n in z.namelist()}
        data = z.read(lookup[member.lower()])
    return load_audio(data, name=Path(member).name)


def track(pieces: list[np.ndarray], seconds: float, seed: int) -> np.ndarray:
    """Pieces in order (repeated until `seconds`), GAP_S apart, over a quiet room tone (-55 dBFS)."""
    n = int(seconds * C.SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 10 ** (-55 / 20), n).astype(np.float32)
    pos, i = int(0.2 * C.SAMPLE_RATE), 0
    while pos < n:
        piece = pieces[i % len(pieces)] / max(1e-6, float(np.abs(pieces[i % len(pieces)]).max())) * 0.7
        k = min(piece.size, n - pos)
        out[pos : pos + k] += piece[:k]
        pos += k + int(GAP_S * C.SAMPLE_RATE)
        i += 1
    return np.clip(out, -1.0, 1.0)


def photo(name: str) -> np.ndarray:
    """The face photo as shipped (RGB), square-cropped around the face with some margin."""
    from avpenet.synth.sources import SOURCES

    src = SOURCES[name]
    x0, y0, side = src.crop
    img = src.load()
    m = side // 4
    y_lo, x_lo = max(0, y0 - m), max(0, x0 - m)
    return img[y_lo : y0 + side + m, x_lo : x0 + side + m]


def frames(
    image: np.ndarray, n: int, *, scale: float = 0.8, roll: float = 0.0, yaw: float = 0.0,
    light: str = "normal", seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """n frames (FRAME_SIZE square) of a still face with a small head motion (roll +-3 deg, shift, zoom +-3%),
    its face at `scale` of the frame, rolled by `roll` degrees, turned by a yaw-like perspective of `yaw`
    (0..1), under a lighting (normal, dark, bright, side)."""
    import cv2

    rng = np.random.default_rng(seed)
    size = FRAME_SIZE
    phase = rng.uniform(0, 2 * np.pi, 3)
    face = cv2.resize(image, (int(size * scale), int(size * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.full((size, size, 3), 90, np.uint8)
    o = (size - face.shape[0]) // 2
    canvas[o : o + face.shape[0], o : o + face.shape[1]] = face
    if yaw:
        s = size * yaw * 0.18
        src = np.float32([[0, 0], [size, 0], [size, size], [0, size]])
        dst = np.float32([[0, 0], [size - 2 * s, s], [size - 2 * s, size - s], [0, size]])
        canvas = cv2.warpPerspective(canvas, cv2.getPerspectiveTransform(src, dst), (size, size))
    out = np.empty((n, size, size, 3), np.uint8)
    for t in range(n):
        w = 2 * np.pi * t / 25.0
        angle = roll + 3.0 * np.sin(w + phase[0])
        zoom = 1.0 + 0.03 * np.sin(0.7 * w + phase[1])
        mat = cv2.getRotationMatrix2D((size / 2, size / 2), angle, zoom)
        mat[:, 2] += 4.0 * np.sin(w + phase[2]), 3.0 * np.cos(w + phase[2])
        out[t] = cv2.warpAffine(canvas, mat, (size, size), borderMode=cv2.BORDER_REPLICATE)
    return relight(out, light)


def relight(video: np.ndarray, light: str) -> np.ndarray:
    x = video.astype(np.float32)
    if light == "dark":
        x *= 0.3
    elif light == "bright":
        x = x * 1.5 + 40
    elif light == "side":
        x *= np.linspace(0.25, 1.2, x.shape[2], dtype=np.float32)[None, None, :, None]
    return np.clip(x, 0, 255).astype(np.uint8)


def build(out: Path, seconds: float = CLIP_SECONDS) -> list[dict[str, str]]:
    """Write the A/V clips and clips.csv (clip, face, voice, kind, expected mask) into `out`."""
    from avpenet.synth.render import write_mp4

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = int(seconds * C.FPS)
    rows = []
    for i, v in enumerate(VOICES):
        video = frames(photo(v.face), n, seed=i)
        distress = [read_sound(v.pk3, m) for m in v.distress]
        calm = [read_sound(a, m) for a, m in v.calm]
        for kind, pieces in (("distress", distress), ("calm", calm)):
            name = f"{v.face}_{v.name}_{kind}.mp4"
            write_mp4(out / name, video, track(pieces, seconds, seed=i))
            rows.append({"clip": name, "face": v.face, "voice": v.name, "kind": kind, "masked": ""})
    silent = np.zeros(int(seconds * C.SAMPLE_RATE), np.float32)
    write_mp4(out / "astronaut_silent.mp4", frames(photo("astronaut"), n, seed=9), silent)
    rows.append({"clip": "astronaut_silent.mp4", "face": "astronaut", "voice": "", "kind": "silent",
                 "masked": "audio"})  # fmt: skip
    empty = np.full((n, FRAME_SIZE, FRAME_SIZE, 3), 60, np.uint8)  # a covered camera: no face
    pain = track([read_sound(VOICES[0].pk3, m) for m in VOICES[0].distress], seconds, seed=11)
    write_mp4(out / "noface_sarge_distress.mp4", empty, pain)
    rows.append({"clip": "noface_sarge_distress.mp4", "face": "", "voice": "sarge", "kind": "distress",
                 "masked": "visual"})  # fmt: skip
    with open(out / "clips.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


VARIANTS = {
    "size": {"large (80%)": {"scale": 0.8}, "medium (50%)": {"scale": 0.5}, "small (25%)": {"scale": 0.25}},
    "angle": {
        "frontal": {}, "roll 20 deg": {"roll": 20.0}, "roll 35 deg": {"roll": 35.0},
        "yaw-like 0.5": {"yaw": 0.5}, "yaw-like 1.0": {"yaw": 1.0},
    },
    "light": {"normal": {}, "dark (x0.3)": {"light": "dark"}, "bright (x1.5+40)": {"light": "bright"},
              "side gradient": {"light": "side"}},
}  # fmt: skip


def detection_rates(n_frames: int = 20) -> dict[str, dict[str, dict[str, float]]]:
    """{axis: {variant: {face: share of frames in which the real FaceLandmarker found the face}}}."""
    from avpenet.features.tracker import FaceTracker

    out: dict[str, dict[str, dict[str, float]]] = {}
    for axis, variants in VARIANTS.items():
        for label, kw in variants.items():
            for face in FACES:
                with FaceTracker() as tracker:
                    tr = tracker.track_frames(list(frames(photo(face), n_frames, seed=3, **kw)))
                rate = float(np.mean(tr.face_present))
                out.setdefault(axis, {}).setdefault(label, {})[face] = rate
    return out


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avpenet.realmedia", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the A/V clips and clips.csv")
    b.add_argument("--out", type=Path, required=True)
    sub.add_parser("detect", help="print the tracker's detection rate per variant (Markdown)")
    args = parser.parse_args(argv)
    if not available():
        print(_missing())
        return 2
    if args.cmd == "build":
        rows = build(args.out)
        print(f"wrote {len(rows)} clips and clips.csv to {args.out}")
        return 0
    rates = detection_rates()
    print("| axis | variant | " + " | ".join(FACES) + " |\n|---|---|" + "---|" * len(FACES))
    for axis, variants in rates.items():
        for label, by_face in variants.items():
            print(f"| {axis} | {label} | " + " | ".join(f"{100 * by_face[f]:.0f}%" for f in FACES) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
