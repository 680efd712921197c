"""What tracking fewer video frames would save in CPU and cost in accuracy, measured, not guessed.

The video path's feature CPU is the FaceLandmarker's landmark model on every sampled frame (contract.FPS), so
the one lever left for issue 15's 60 ms per second of video is to track fewer frames. `python -m
loadtests.track_stride --data S --stride 2 --out S2` re-tracks every rendered MP4 of a dataset (`avpenet
synth`), giving the landmarker every `stride`-th sampled frame and the last, and fills the frames between by
linear interpolation of their tracked neighbours (a frame has a face only where both have one). It writes a
copy of the set whose `.npz` tracks are those and whose labels.csv names no video, so that
`avpenet evaluate --data S2 --json OUT` scores the served weights on them (the audio + landmarks path), and
prints the tracking CPU per second of video at stride 1 and at `stride` on the first `--cpu-clips` clips,
one setting after the other. With `--stride 1` the tracks equal the stamped ones `avpenet synth` wrote.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import numpy as np

from avpenet import contract

# A track's per-frame float arrays (contract.TRACK_ARRAYS): what a skipped frame takes from its neighbours
INTERPOLATED = tuple(
    k for k, (shape, dtype) in contract.TRACK_ARRAYS.items() if shape[0] == "T" and dtype is np.float32
)


def track_every(video: bytes, stride: int):
    """The FaceTrack of an MP4 whose landmarker saw every `stride`-th sampled frame and the last."""
    from avpenet.features import tracker
    from avpenet.features.track import FaceTrack

    keep: list[int] = []
    seen: list[FaceTrack] = []
    with tracker.pooled() as face_tracker:

        def offer(i: int, rgb, last: bool) -> None:
            if i % stride == 0 or last:
                keep.append(i)
                seen.append(face_tracker.track_frames([rgb]))
            else:
                face_tracker.skip_frame()

        held, n = None, 0  # one frame held back, to know the last one; no clip is kept in memory whole
        for n, rgb in enumerate(tracker.iter_video_frames(video), start=1):
            if held is not None:
                offer(n - 2, held, last=False)
            held = rgb
        if held is not None:
            offer(n - 1, held, last=True)
    if not seen:  # no picture at all
        return FaceTrack.empty(0)
    track = FaceTrack.empty(n, tuple(seen[0].image_size))
    for j, i in enumerate(keep):
        track.face_present[i] = seen[j].face_present[0]
        for name in INTERPOLATED:
            getattr(track, name)[i] = getattr(seen[j], name)[0]
    for a, b in zip(keep, keep[1:], strict=False):
        if not (track.face_present[a] and track.face_present[b]):
            continue
        for i in range(a + 1, b):
            w = (i - a) / (b - a)
            track.face_present[i] = True
            for name in INTERPOLATED:
                arr = getattr(track, name)
                arr[i] = (1 - w) * arr[a] + w * arr[b]
    return track


def cpu_ms_per_video_second(videos: list[bytes], stride: int) -> float:
    seconds, start = 0.0, time.process_time()
    for video in videos:
        seconds += track_every(video, stride).duration_s
    return (time.process_time() - start) * 1000.0 / seconds


def write_set(data: Path, out: Path, stride: int) -> int:
    """A copy of the set at `out` with the strided tracks as its landmarks and no video; the clips re-tracked.
    A clip whose sound is only in its MP4 gets it as a WAV (the floats the reader decodes from the MP4)."""
    import soundfile as sf

    from avpenet.features import audio, cache

    rows = cache.read_labels(data)
    for sub in ("audio", "visual"):
        (out / sub).mkdir(parents=True)
    for row in rows:
        if row["audio"]:  # copied: the dataset reader refuses links that point outside the set
            (out / row["audio"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data / row["audio"], out / row["audio"])
        elif row["video"]:
            wave = audio.load_audio((data / row["video"]).read_bytes(), name=row["video"])
            if wave is not None:
                row["audio"] = f"audio/{row['clip_id']}.wav"
                sf.write(out / row["audio"], wave, contract.SAMPLE_RATE, subtype="FLOAT")
        if row["video"]:
            row["visual"] = row["visual"] or f"visual/{row['clip_id']}.npz"
            (out / row["visual"]).parent.mkdir(parents=True, exist_ok=True)
            track_every((data / row["video"]).read_bytes(), stride).save_npz(out / row["visual"])
        elif row["visual"]:
            (out / row["visual"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data / row["visual"], out / row["visual"])
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "video": ""} for row in rows)
    return sum(bool(row["video"]) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a rendered set (avpenet synth)")
    parser.add_argument("--stride", type=int, default=2, help="track every N-th sampled frame")
    parser.add_argument("--out", type=Path, required=True, help="where the copy with strided tracks goes")
    parser.add_argument("--cpu-clips", type=int, default=20, help="clips the CPU is measured on (0: none)")
    args = parser.parse_args(argv)
    if args.stride < 1 or args.cpu_clips < 0:
        parser.error("--stride must be at least 1 and --cpu-clips at least 0")
    if args.out.exists():
        parser.error(f"--out {args.out} exists; give a new folder")
    videos = sorted((args.data / "video").glob("*.mp4"))[: args.cpu_clips]
    if videos:
        blobs = [v.read_bytes() for v in videos]
        cpu_ms_per_video_second(blobs[:1], 1)  # warm-up: the pooled landmarker and the model file
        every, strided = cpu_ms_per_video_second(blobs, 1), cpu_ms_per_video_second(blobs, args.stride)
        print(
            f"tracking CPU over {len(blobs)} clips: every frame {every:.1f}, every {args.stride}. frame "
            f"{strided:.1f} ms per s of video ({every / strided:.2f}x)"
        )
    n = write_set(args.data, args.out, args.stride)
    print(f"{n} clips re-tracked at stride {args.stride} into {args.out}; score them with")
    print(f"  avpenet evaluate --data {args.out} --json OUT.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
