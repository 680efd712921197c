"""What tracking fewer video frames saves in CPU and costs in accuracy, measured, not guessed.

The video path's feature CPU is the FaceLandmarker's landmark model on every sampled frame (contract.FPS), so
the one lever left for issue 15's 60 ms per second of video is to track fewer frames: the gateway's
`track_every` setting (settings.Limits; FaceTracker.track_frames gives the landmarker every N-th sampled frame
and the last and fills the frames between by linear interpolation of their tracked neighbours, a face only
where both have one). `python -m loadtests.track_stride --data S --stride 2 --out S2` re-tracks every rendered
MP4 of a dataset (`avpenet synth`) with that code at `stride`. It writes a copy of the set whose `.npz`
tracks are those and whose labels.csv names no video, so that `avpenet evaluate --data S2 --json OUT` scores
the served weights on them (the audio + landmarks path), and prints the tracking CPU per second of video at
stride 1 and at `stride` on the first `--cpu-clips` clips, one setting after the other. With `--stride 1`
the tracks equal the stamped ones `avpenet synth` wrote.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

from avpenet import contract
from avpenet.argtypes import count, positive_int


def track_every(video: bytes, stride: int):
    """The FaceTrack the gateway serves for an MP4 with `track_every: stride` (settings.Limits)."""
    from avpenet.features import tracker

    return tracker.track_video(video, tracker.VideoLimits(track_every=stride))


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
    parser.add_argument("--stride", type=positive_int, default=2, help="track every N-th sampled frame")
    parser.add_argument("--out", type=Path, required=True, help="where the copy with strided tracks goes")
    parser.add_argument("--cpu-clips", type=count, default=20, help="clips the CPU is measured on (0: none)")
    args = parser.parse_args(argv)
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
