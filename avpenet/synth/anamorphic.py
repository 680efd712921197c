"""A copy of a rendered set whose MP4s store non-square pixels, to measure what such video costs the model.

    python -m avpenet.synth.anamorphic SRC DST --ratio 4:3

Each MP4 is re-encoded with its frames resized to the width a camera with pixels `ratio` as wide as tall
stores (1440 x 1080 for a 1920 x 1080 picture at 4:3, as HDV does) and that ratio declared in the stream,
so a player shows the same pictures; the sound is copied packet for packet and every other file of the set
as it is. `--ratio 1:1` re-encodes at the same size: the control, the re-encoding's own cost. A tracked
``.npz``'s stamp no longer matches the new MP4, so `avpenet features` tracks each one again
(features/tracked.py). docs/EVALUATION.md, *Non-square pixels*, has what it measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np

from avpenet.features import pixel_aspect
from avpenet.synth.render import h264_options


def reencode(src: Path, dst: Path, ratio: Fraction) -> None:
    """`src`'s pictures stored with pixels `ratio` as wide as tall (declared), its sound copied."""
    import av
    import cv2

    with av.open(os.fspath(src)) as inp, av.open(os.fspath(dst), "w", format="mp4") as out:
        picture = inp.streams.video[0]
        sound = inp.streams.audio[0] if inp.streams.audio else None
        width, height = picture.codec_context.width, picture.codec_context.height
        coded = 2 * round(width / ratio / 2)  # yuv420p: an even width
        video = out.add_stream("libx264", rate=picture.average_rate)
        video.width, video.height, video.pix_fmt = coded, height, "yuv420p"
        video.options = h264_options(crf="18", preset="veryfast")  # as synth.render.write_mp4
        if ratio != 1:
            video.codec_context.sample_aspect_ratio = ratio
        copied = out.add_stream_from_template(sound) if sound is not None else None
        shrink = cv2.INTER_AREA if coded < width else cv2.INTER_CUBIC
        for packet in inp.demux():
            if packet.stream is picture:
                for frame in packet.decode():
                    rgb = cv2.resize(frame.to_ndarray(format="rgb24"), (coded, height), interpolation=shrink)
                    stored = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                    stored.pts, stored.time_base = frame.pts, frame.time_base
                    out.mux(video.encode(stored))
            elif packet.stream is sound and packet.dts is not None:
                packet.stream = copied
                out.mux(packet)
        out.mux(video.encode(None))


def _ratio(text: str) -> Fraction:
    width, _, height = text.partition(":")
    try:
        ratio = Fraction(int(width), int(height or 1))
    except (ValueError, ZeroDivisionError):
        ratio = Fraction(0)
    if not pixel_aspect.accepted(ratio):  # the shapes the service accepts
        most = pixel_aspect.MAX_RATIO
        raise argparse.ArgumentTypeError(
            f"{text}: a pixel shape from 1:{most} to {most}:1 (width:height, e.g. 4:3)"
        )
    return ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a rendered set (labels.csv, video/*.mp4)")
    parser.add_argument("dst", type=Path, help="a new folder")
    parser.add_argument("--ratio", type=_ratio, required=True, help="width:height of one pixel, e.g. 4:3")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if not (args.src / "labels.csv").is_file():
        parser.error(f"{args.src} holds no labels.csv; give a rendered set (avpenet synth --out DIR)")
    if args.dst.exists():
        parser.error(f"{args.dst} exists; give a new folder")
    shutil.copytree(args.src, args.dst, ignore=shutil.ignore_patterns("features", "video"))
    (args.dst / "video").mkdir()
    names = sorted(p.name for p in (args.src / "video").glob("*.mp4"))
    spawn = multiprocessing.get_context("spawn")  # PyAV is not fork-safe once initialised (features/cache.py)
    with ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
        jobs = [
            pool.submit(reencode, args.src / "video" / n, args.dst / "video" / n, args.ratio) for n in names
        ]
        for job in jobs:
            job.result()
    shape = f"{args.ratio.numerator}:{args.ratio.denominator}"
    print(f"{len(names)} MP4s re-encoded with {shape} pixels in {args.dst}")


if __name__ == "__main__":
    main()
