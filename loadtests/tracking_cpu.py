"""CPU of the video path's feature code per second of video, with the tracker's two ways of reading a result.

`python -m loadtests.tracking_cpu --rounds 4 --clips 20` builds the bench's `av_3s` clip (an MP4 with sound)
and runs `avclip.decode_clip` on it (one demux, H.264 decode, sampling at contract.FPS, the FaceLandmarker,
the sound) `clips` times per setting and round in this one process: with mediapipe's result read as arrays
(`landmarker_arrays.FAST`, what is served) and through its Python objects, alternated. It prints this
process's CPU per second of video for each, their ratio per round, and whether both gave the same track.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from avpenet.argtypes import positive_int
from loadtests import clips


def main(argv: list[str] | None = None) -> int:
    from avpenet.features import avclip, landmarker_arrays, tracker
    from avpenet.features.track import FaceTrack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=4)
    parser.add_argument(
        "--clips", type=positive_int, default=20, help="decode_clip calls per setting and round"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="avpenet-tracking-cpu-") as tmp:  # a synthetic clip, read once
        work = Path(tmp)
        data = (work / clips.build(work, ["av_3s"])["av_3s"]["clip"]).read_bytes()
    limits = tracker.VideoLimits()
    fast_read = landmarker_arrays.FAST
    tracks: dict[bool, FaceTrack] = {}

    def ms_per_video_second(fast: bool) -> float:
        landmarker_arrays.FAST = fast and fast_read
        start = time.process_time()
        for _ in range(args.clips):
            _, tracks[fast] = avclip.decode_clip(data, limits, name="av_3s.mp4")
        return (time.process_time() - start) / args.clips * 1000.0 / tracks[fast].duration_s

    ratios = []
    try:
        ms_per_video_second(True)  # warm-up: the pooled landmarker, the model file, imports
        for rnd in range(1, args.rounds + 1):
            objects, arrays = ms_per_video_second(False), ms_per_video_second(True)
            ratios.append(objects / arrays)
            shown = f"Python objects {objects:.1f}, arrays {arrays:.1f} ms CPU per s of video"
            print(f"round {rnd}: {shown} ({ratios[-1]:.2f}x)")
    finally:  # the process goes on serving (tests) with the read it started with
        landmarker_arrays.FAST = fast_read
    same = all(
        np.array_equal(getattr(tracks[True], k), getattr(tracks[False], k))
        for k in ("landmarks", "blendshapes", "face_present", "head_pose")
    )
    print(
        f"median {statistics.median(ratios):.2f}x; arrays read: {fast_read}; the same track both ways: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
