"""What a stream's lost modality costs when it returns: the gateway's memory and time at that moment.

`python -m loadtests.stream_gap --minutes 60 --lost visual` runs a stream state (no server) as a bedside
device feeds it: 2-s audio chunks and 10 fps landmark frames, then `--minutes` without `--lost` (the camera,
or the microphone) while the other modality goes on, then both again. It prints the process's peak RSS
growth and the time of the chunk at which the lost modality returns, and what the state holds after it.
Memory is the point: a gateway replica holds up to 64 streams (`streams.max_streams`).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from avpenet import contract
from avpenet.argtypes import positive_number
from avpenet.features.track import FaceTrack
from preprocess_service.stream import protocol
from preprocess_service.stream.protocol import Start
from preprocess_service.stream.state import StreamState

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "adult-S0003-C02.npz"
CHUNK_S = 2


def measure(minutes: float, lost: str) -> dict:
    track = FaceTrack.load_npz(EXAMPLE.read_bytes())
    size = tuple(int(v) for v in track.image_size)
    state = StreamState(Start(type="start", mode="landmarks", age_group="adult", image_size=size), 10**7)
    frame = memoryview(protocol.landmark_frame_bytes(track, 0))
    audio = memoryview(np.full(contract.SAMPLE_RATE * CHUNK_S, 0.01, "<f4").tobytes())

    def chunk(with_audio: bool, with_frames: bool) -> None:
        if with_audio:
            state.add_audio({}, audio)
        for _ in range(CHUNK_S * contract.FPS if with_frames else 0):
            state.add_frame({}, frame)
        state.ready()

    for _ in range(5):
        chunk(True, True)
    for _ in range(int(minutes * 60 / CHUNK_S)):
        chunk(lost != "audio", lost != "visual")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    chunk(True, True)
    took = time.perf_counter() - start
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"took_s": took, "peak_rss_mb": grew_mb, "frames_held": len(state.frames),
            "samples_held": int(state.audio_buf.size)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=positive_number, default=60.0, help="how long the modality is gone")
    parser.add_argument("--lost", choices=("visual", "audio"), default="visual")
    args = parser.parse_args(argv)
    got = measure(args.minutes, args.lost)
    print(
        f"{args.lost} lost for {args.minutes:g} min: its return took {got['took_s']:.2f} s, peak RSS "
        f"+{got['peak_rss_mb']:.0f} MB; held after it: {got['frames_held']} frames, "
        f"{got['samples_held']} samples"
    )


if __name__ == "__main__":
    main()
