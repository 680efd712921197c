"""One stream's media state: sequence checks, the audio and frame buffers, and windows as they complete.

Window i covers audio samples [i*HOP, +WINDOW) and frames [i*FRAMES_PER_HOP, +FRAMES_PER_WINDOW), exactly as
clip scoring cuts a clip (windows.inputs_from_features on the window's own samples and frames, read with the
neighbours their masks need: `faces`), so a replayed recording gets the clip endpoint's window scores. A
window is complete when every expected modality has reached its end (frames: with their masks settled), or
when a modality lags the other by more than `signal_timeout_s` of media (it is lost: the window is scored
without it, and when it returns it is realigned to the leader, the gap silent / faceless). Buffers keep
only what the next window needs: memory per stream is bounded whatever the stream's length.
Video frames are tracked once each by ONE FaceLandmarker in VIDEO mode owned by this state (so the state must
stay on the replica that created it). Not thread-safe: the session calls it from one worker at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avpenet import contract
from avpenet.errors import InputError
from avpenet.features import audio as faudio
from avpenet.features import windows
from avpenet.features.track import FaceTrack
from preprocess_service.stream import faces
from preprocess_service.stream.frames import decode_image, landmark_frame
from preprocess_service.stream.protocol import Start, StreamRejected
from preprocess_service.stream.samples import Unheard, audio_wave, refused_samples
from preprocess_service.stream.signals import Signals
from preprocess_service.stream.timeline import FrameClock


@dataclass
class ReadyWindow:
    index: int
    start_s: float
    end_s: float
    inputs: dict[str, np.ndarray]  # contract input name -> [1, ...]
    audio_ok: bool
    visual_ok: bool


class StreamState:
    def __init__(self, start: Start, max_pixels: int) -> None:
        self.start = start
        self.max_pixels = max_pixels
        self.age = contract.age_index(start.age_group)
        self.expect_audio = start.audio
        self.expect_frames = start.mode != "audio"
        self.next_seq = {"audio": 0, "frame": 0}
        self.n_samples = 0  # samples at 16 kHz received so far (plus realignment padding)
        self.n_frames = 0
        self.audio_buf = np.zeros(0, np.float32)  # samples from audio_base on
        self.audio_base = 0
        self.unheard = Unheard()  # refused chunks' silence: no sound (samples.Unheard)
        self.frames: list[FaceTrack] = []  # 1-frame tracks from frame_base on
        self.frame_base = 0
        self.next_window = 0
        self.image_size: tuple[int, int] | None = (
            tuple(start.image_size) if start.mode == "landmarks" else None
        )
        self.lost = {"audio": False, "visual": False}
        self.clock = FrameClock(start.config.signal_timeout_s)  # frames with a capture time
        self.signals = Signals(self.expect_audio, self.expect_frames)
        self._resampler = None
        self._tracker = None
        if start.sample_rate != contract.SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(start.sample_rate, contract.SAMPLE_RATE, 1, "float64", "HQ")

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None

    # --- media time -----------------------------------------------------------------------------------------
    @property
    def audio_s(self) -> float:
        return self.n_samples / contract.SAMPLE_RATE

    @property
    def frames_s(self) -> float:
        return self.n_frames / contract.FPS

    @property
    def media_s(self) -> float:
        """How far the stream has got (the leading modality)."""
        return max(self.audio_s if self.expect_audio else 0.0, self.frames_s if self.expect_frames else 0.0)

    # --- chunks ---------------------------------------------------------------------------------------------
    def check_seq(self, kind: str, seq: int) -> None:
        """Accept chunk `seq` of `kind`, or refuse a duplicate (ignored) or a gap (resend from the expected
        one). Called on receipt (the event loop), before the chunk is queued; only this advances next_seq
        (inbound.unaccept moves it back over chunks a drain did not process)."""
        expected = self.next_seq[kind]
        if kind == "audio" and not self.expect_audio:
            raise StreamRejected("unexpected_audio", "this stream was started with audio false")
        if kind == "frame" and not self.expect_frames:
            raise StreamRejected(
                "unexpected_frame", "this stream was started in audio mode; frames are not read"
            )
        if seq < expected:
            raise StreamRejected(
                "duplicate", f"{kind} chunk {seq} was already received (next is {expected}); ignored"
            )
        if seq > expected:
            raise StreamRejected(
                "out_of_order", f"{kind} chunk {seq} arrived before {expected}; resend from {expected}"
            )
        self.next_seq[kind] += 1  # accepted at receipt: a chunk refused later (payload) keeps its time

    def add_audio(self, header: dict, payload: memoryview) -> None:
        """A chunk refused (StreamRejected) keeps its time as unheard silence (else the audio trails)."""
        try:
            wave = audio_wave(header, payload, self.start.sample_rate)
        except StreamRejected:
            self.refuse_audio(header, len(payload))
            raise
        self._append_audio(wave)

    def refuse_audio(self, header: dict, size: int) -> None:
        """A refused chunk of `size` payload bytes: silence of its length, unheard (samples.Unheard)."""
        self._append_audio(np.zeros(refused_samples(header, size, self.start.sample_rate), "f4"), heard=False)

    def _append_audio(self, wave: np.ndarray, heard: bool = True) -> None:
        lead = tail = 0  # output samples soxr holds back, before and after this chunk (its time lags by them)
        if self._resampler is not None:
            lead = round(self._resampler.delay())
            wave = self._resampler.resample_chunk(wave.astype(np.float64)).astype(np.float32)
            tail = round(self._resampler.delay())
        self._returning("audio")
        if not heard:  # the chunk's own time, not that of the delayed output this call gave
            self.unheard.add(self.n_samples + lead, self.n_samples + wave.size + tail)
        self.audio_buf = np.concatenate([self.audio_buf, wave])
        self.n_samples += wave.size

    def add_frame(self, header: dict, payload: memoryview) -> None:
        slot = self.clock.slot(header, self)  # before the frame is decoded and tracked: a refused one is not
        try:
            track = (
                landmark_frame(payload, self.image_size or (0, 0))
                if self.start.mode == "landmarks"
                else self._video_frame(header, payload)
            )
        except (StreamRejected, InputError):  # refused: its slot holds a frame without a face
            self._append_frame(FaceTrack.empty(1, self.image_size or (0, 0)), slot)
            raise
        self._append_frame(track, slot)

    def add_dropped_frame(self, header: dict) -> None:
        """A frame the flow control dropped unread: it counts as a frame with no face (the timeline holds)."""
        self._append_frame(FaceTrack.empty(1, self.image_size or (0, 0)), self.clock.slot(header, self))

    def _append_frame(self, track: FaceTrack, slot: int | None) -> None:
        if slot is None:
            self._returning("visual")
        else:  # placed by its capture time: the slots a stall skipped are frames without a face
            self.lost["visual"] = False
            self._pad_frames(slot - self.n_frames)
        self.frames.append(track)
        self.n_frames += 1

    def _video_frame(self, header: dict, payload: memoryview) -> FaceTrack:
        rgb = decode_image(header, payload, self.max_pixels)
        size = (int(rgb.shape[1]), int(rgb.shape[0]))
        if self.image_size is None:
            self.image_size = size
        elif size != self.image_size:
            raise StreamRejected(
                "frame_size_changed",
                f"frame is {size[0]}x{size[1]}; this stream's frames are "
                f"{self.image_size[0]}x{self.image_size[1]}",
            )
        if self._tracker is None:
            from avpenet.features.tracker import FaceTracker

            self._tracker = FaceTracker()
        return self._tracker.track_frames([rgb])

    def _returning(self, modality: str) -> None:
        """A lost modality's data returns: realign it to the leader (the gap is silence / no face). Only new
        data ends a loss: the windows cut during a short stall still hold data from before it."""
        if not self.lost[modality]:
            return
        self.lost[modality] = False
        if modality == "audio":
            self._pad_audio(int(round(self.frames_s * contract.SAMPLE_RATE)) - self.n_samples)
        else:
            self._pad_frames(int(round(self.audio_s * contract.FPS)) - self.n_frames)

    # The part of a gap only windows already cut read is counted, not held (held, an hour without a camera
    # cost 239 MB at its return: loadtests/stream_gap.py): padding stays under a window.
    def _pad_audio(self, gap: int) -> None:
        self._trim()
        unread = 0 if self.audio_buf.size else self.next_window * contract.HOP_SAMPLES - self.n_samples
        skip = max(0, min(gap, unread))
        self.n_samples, self.audio_base = self.n_samples + skip, self.audio_base + skip
        if gap > skip:  # silence nobody heard: a window mostly made of it is one without audio (Unheard)
            self.audio_buf = np.concatenate([self.audio_buf, np.zeros(gap - skip, np.float32)])
            self.unheard.add(self.n_samples, self.n_samples + gap - skip)
            self.n_samples += gap - skip

    def _pad_frames(self, gap: int) -> None:
        self._trim()
        unread = self.next_window * contract.FRAMES_PER_HOP - faces.HISTORY - self.n_frames  # _trim's keep_f
        skip = max(0, min(gap, unread))
        self.n_frames, self.frame_base = self.n_frames + skip, self.frame_base + skip
        for _ in range(max(0, gap - skip)):
            self.frames.append(FaceTrack.empty(1, self.image_size or (0, 0)))
            self.n_frames += 1

    # --- windows --------------------------------------------------------------------------------------------
    def _lagging(self) -> dict[str, bool]:
        """Which expected modality lags the other by more than the timeout (windows no longer wait for it)."""
        timeout = self.start.config.signal_timeout_s
        both = self.expect_audio and self.expect_frames
        return {
            "audio": both and self.frames_s - self.audio_s > timeout,
            "visual": both and self.audio_s - self.frames_s > timeout,
        }

    def ready(self) -> list[ReadyWindow]:
        """Windows completed by the data so far (in order)."""
        out = []
        while True:
            end_s = contract.window_end_s(self.next_window)
            lag = self._lagging()
            audio_done = not self.expect_audio or self.audio_s >= end_s or lag["audio"]
            frames_done = not self.expect_frames or lag["visual"] or self._frames_in(end_s)
            if not (audio_done and frames_done) or self.media_s < end_s:
                return out
            self.lost["audio"] |= lag["audio"]
            self.lost["visual"] |= lag["visual"]
            out.append(self._window(self.next_window))

    def _frames_in(self, end_s: float) -> bool:
        """The window's frames are in, and the frames after it can no longer change their masks (`faces`)."""
        end = round(end_s * contract.FPS)
        return self.frames_s >= end_s - 1e-9 and faces.settled(self.frames, self.n_frames, end)

    def finish(self) -> list[ReadyWindow]:
        """The remaining windows at the end of the stream, counted as clip scoring counts a clip."""
        if self._resampler is not None:  # the resampler's delayed tail
            tail = self._resampler.resample_chunk(np.zeros(0, np.float64), last=True).astype(np.float32)
            self.audio_buf = np.concatenate([self.audio_buf, tail])
            self.n_samples += tail.size
        out = self.ready()
        total = max(faudio.window_count(self.n_samples), windows.frame_window_count(self.n_frames))
        while self.next_window < total:
            out.append(self._window(self.next_window))
        return out

    def _window(self, i: int) -> ReadyWindow:
        s0 = i * contract.HOP_SAMPLES - self.audio_base
        wave = (
            self.audio_buf[max(s0, 0) : max(s0 + contract.WINDOW_SAMPLES, 0)] if self.expect_audio else None
        )
        f0 = max(i * contract.FRAMES_PER_HOP - self.frame_base, 0)
        count = min(contract.FRAMES_PER_WINDOW, len(self.frames) - f0) if self.expect_frames else 0
        feats = mask = None
        if self.expect_frames:  # read with the frames around it (`faces`)
            feats, mask = faces.window_features(self.frames, f0, count) if count > 0 else (
                np.zeros((0, contract.VISUAL_FEATURE_DIM), np.float32), np.zeros(0, np.float32))  # fmt: skip
        at = max(s0, 0) + self.audio_base  # no sound: none received, or mostly refused chunks' (`Unheard`)
        if wave is not None and (wave.size == 0 or self.unheard.mostly_in(at, at + wave.size)):
            wave = None
        inputs = windows.inputs_from_features(wave, feats, mask, self.age, served=True)
        if len(inputs[contract.AUDIO_PRESENT.name]) == 0:  # neither modality holds anything for this window
            inputs = windows.inputs_from_features(np.zeros(1, np.float32), None, None, self.age, served=True)
            inputs[contract.AUDIO_PRESENT.name][:] = 0.0
        self.next_window = i + 1
        self._trim()
        return ReadyWindow(
            index=i,
            start_s=i * contract.HOP_SECONDS,
            end_s=contract.window_end_s(i),
            inputs={k: v[:1] for k, v in inputs.items()},
            audio_ok=wave is not None,
            visual_ok=bool(mask is not None and mask.any()),
        )

    def _trim(self) -> None:
        """Drop samples and frames no later window reads."""
        keep_s = self.next_window * contract.HOP_SAMPLES
        if keep_s > self.audio_base:
            cut = min(keep_s - self.audio_base, self.audio_buf.size)
            self.audio_buf = self.audio_buf[cut:].copy()
            self.audio_base += cut
        self.unheard.forget_before(keep_s)
        keep_f = self.next_window * contract.FRAMES_PER_HOP - faces.HISTORY  # the next window's, its history
        if keep_f > self.frame_base:
            cut = min(keep_f - self.frame_base, len(self.frames))
            del self.frames[:cut]
            self.frame_base += cut

    def signal_events(self, w: ReadyWindow) -> list[dict]:
        """signal_lost / signal_back when a window's modality content changes from the previous window."""
        return self.signals.events(w.index, w.start_s, w.audio_ok, w.visual_ok)
