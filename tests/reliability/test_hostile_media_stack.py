"""Hostile media against the real stack (Ray Serve + Triton, loopback): what the corpus's status check cannot
see. SDP text behind an MP3/`ftyp` header must not make any Serve replica open a UDP socket (FFmpeg bound RTP
ports and waited 20-30 s, four uploads stalled all scoring); a 1.5 KB MP4 with forged sample tables must not
grow the FeatureExtractor (it took 1.7 GB); and the stack keeps scoring a control clip the same afterwards.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest
import requests
from support import hostile_media as hm
from support.gateway import audio_score, post_score, wav_bytes
from support.processes import receiving_udp_sockets, rss_mb, serve_replicas

pytestmark = pytest.mark.integration

ANSWER_BOUND_S = 5.0  # refusals take milliseconds; the SDP demuxer waited 20-30 s
RSS_SLACK_MB = 150.0  # the forged tables cost FFmpeg 1.7 GB; allocator noise is tens of MB


class Watch:
    """Samples the replicas' UDP sockets and RSS while a request runs."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs, self.udp, self.rss = procs, [], []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.udp.append(receiving_udp_sockets(self.procs))
            self.rss.append(rss_mb(self.procs))
            time.sleep(0.01)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def post(stack, part: str, name: str, data: bytes) -> requests.Response:
    return post_score(stack, files={part: (name, data)}, data={"age_group": "adult"})


def control_score(stack) -> float:
    return audio_score(stack, wav_bytes(3.0, freq=500.0), "control.wav")


def test_hostile_media_opens_no_socket_takes_no_memory_and_changes_nothing(gateway_stack):
    before_score = control_score(gateway_stack)
    procs = serve_replicas()
    assert procs, "no Serve replica processes found"
    udp_before, rss_before = receiving_udp_sockets(procs), rss_mb(procs)
    uploads = [
        ("audio", "probe.mp3", hm.SDP_PROBES["mp3_frame_header"], 422),
        ("audio", "probe.mp4", hm.SDP_PROBES["ftyp_prefix"], 422),
        ("video", "bomb.mp4", hm.sample_table_bomb(), 422),
        ("video", "frames.mp4", hm.sample_count_bomb(), 413),
    ] * 3
    for part, name, data, status in uploads:
        with Watch(procs) as watch:
            started = time.perf_counter()
            reply = post(gateway_stack, part, name, data)
            seconds = time.perf_counter() - started
        assert reply.status_code == status, f"{name}: {reply.text[:300]}"
        assert seconds < ANSWER_BOUND_S, f"{name} took {seconds:.1f} s"
        assert max(watch.udp, default=udp_before) <= udp_before, f"{name}: a replica opened a UDP socket"
        grown = max(watch.rss, default=rss_before) - rss_before
        assert grown < RSS_SLACK_MB, f"{name}: replicas grew {grown:.0f} MB while it was refused"
    assert control_score(gateway_stack) == pytest.approx(before_score, abs=1e-4)
