"""Audio decoding to 16 kHz mono and the 3 s / 1 s-hop windows the model scores.

Decoders: soundfile (libsndfile, `sfaudio`) for WAV/FLAC/OGG/AIFF(-C)/CAF/Wave64, PyAV (FFmpeg, `avaudio`)
for MP3, ADTS AAC (.aac), AMR-NB/WB (.amr) and the audio track of MP4/MOV/WebM/MKV (and an Ogg or CAF
libsndfile cannot read, a WAV or Wave64 of a codec libsndfile lacks: `wavcodec`). Both read from memory when
given bytes and keep the decoded start of a file with a damaged tail. Resampling uses soxr (high quality,
linear phase), so 44.1/48 kHz recordings lose nothing below 8 kHz and alias nothing into the band the log-mel
sees.

A container without an audio stream (or with zero decoded samples) gives **None**, not an error: the clip is
then scored on the face alone (``audio_present = 0``). A WAV/FLAC/OGG/AIFF/CAF/W64 file is audio, so one that
yields no sample is UndecodableMedia (empty, or corrupt/truncated), never None (an Ogg holding no audio
stream at all is None, as a container). Decoding failures raise ``avpenet.errors`` types.

Hostile samples: a declared rate outside [AUDIO_MIN_INPUT_RATE, AUDIO_MAX_INPUT_RATE] is refused, and so are
more than AUDIO_MAX_INPUT_CHANNELS channels and samples beyond ``MAX_SAMPLE_MAGNITUDE`` (float WAVs can hold
up to 3.4e38; the resampler's overshoot then overflows float32 to Inf/NaN). The waveform is checked for
NaN/Inf after every step that can create them (decoding, channel mixing, resampling, the window gain), so a
poisoned wave never reaches the model.

Level normalisation (``normalise_window``): recording gain differs by device and microphone distance, so each
3 s window is scaled toward ``contract.AUDIO_TARGET_RMS_DBFS`` (-20 dBFS RMS). Plain RMS normalisation would
lift a quiet room's noise floor to the level of a cry, so the gain has a soft knee: windows below
``contract.AUDIO_SILENCE_DBFS`` (-60 dBFS) are left as they are, and above it the gain may not exceed the
window's distance from the silence threshold nor ``MAX_GAIN_DB``. The output level is then a monotone function
of the input level (a quieter window never comes out louder than a louder one): -60 → -60, -50 → -40,
-40 and above → -20 dBFS. A -50 dBFS noise floor stays 20 dB below a normalised cry.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

from avpenet import contract
from avpenet.errors import TooLarge, UndecodableMedia
from avpenet.features import media

MAX_GAIN_DB = contract.AUDIO_MAX_GAIN_DB  # the most a quiet window is amplified
# Full scale is ±1. Float recordings may exceed it (a hot mix; some tools write floats in int16 units, ±32768:
# the window normaliser makes level irrelevant), not by 120 dB: beyond this the "audio" is numbers, and near
# float32's limit mixing and resampling overflow.
MAX_SAMPLE_MAGNITUDE = 1e6
DEFAULT_MAX_SECONDS = 600.0
# libsndfile reads (sfaudio) of at most this many frames: a decoder error loses the read it ends, so a
# damaged tail costs at most this much of the decoded start (1 s at 16 kHz).
READ_BLOCK_FRAMES = 1 << 14
# Seconds of a wave `resample` makes float64 and hands soxr at a time (3 MB at the highest accepted rate).
RESAMPLE_BLOCK_S = 2.0
_EPS = 1e-12


def load_audio(
    source: media.Source, *, name: str | None = None, max_seconds: float | None = None
) -> np.ndarray | None:
    """Decode a path or in-memory bytes to float32 mono at contract.SAMPLE_RATE; None: no audio track.

    ``name`` (an upload's file name) is not read: the content decides (a refusal says what the bytes look
    like, content_hint); patient media and names are never logged. Raises UnsupportedMedia (not a format
    we decode), UndecodableMedia (corrupt, truncated, non-finite samples) and TooLarge (longer than
    ``max_seconds``, default 600 s).
    """
    limit = DEFAULT_MAX_SECONDS if max_seconds is None else float(max_seconds)
    head = media.read_head(source)
    kind = media.audio_kind(source, head)
    if kind is None:
        raise media.refusal(head, "audio type", media.SUPPORTED_AUDIO)
    from avpenet.features import avaudio, sfaudio, wavcodec  # they import this module's checks

    if kind in media.WAV_KINDS and (codec := wavcodec.for_ffmpeg(source, kind)) is not None:
        wave, sr = wavcodec.read(source, kind, codec, limit)  # a codec libsndfile lacks, or MPEG audio
    elif kind in media.SOUND_FILE_KINDS:
        wave, sr = sfaudio.load(source, kind, limit)
    else:
        wave, sr = avaudio.read(source, kind, limit)
    return cut_to(to_model_rate(wave, sr, kind), limit)


def mix_down(samples: np.ndarray, axis: int) -> np.ndarray:
    """float32 mono: the mean of the channels along `axis`, summed in float64. Every decoder mixes so
    (sfaudio, avaudio), so one recording scores the same in any container."""
    return samples.mean(axis=axis, dtype=np.float64).astype(np.float32)


def check_wave(wave: np.ndarray, what: str) -> np.ndarray:
    """`wave` unchanged if every sample is finite and within ±MAX_SAMPLE_MAGNITUDE; else UndecodableMedia."""
    # max/min propagate NaN and need no temporary copy of a long multichannel recording (abs/isfinite would)
    peak = max(float(np.max(wave)), -float(np.min(wave))) if wave.size else 0.0
    if not math.isfinite(peak):
        raise UndecodableMedia(f"{what} contain NaN or Inf values; send finite audio samples")
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise UndecodableMedia(
            f"{what} reach {peak:.3g}; audio samples must lie within ±{MAX_SAMPLE_MAGNITUDE:g} "
            "(full scale is ±1)"
        )
    return wave


def check_channels(channels: int, kind: str) -> None:
    """UndecodableMedia when a header declares more channels than an upload may carry."""
    if channels > contract.AUDIO_MAX_INPUT_CHANNELS:
        raise UndecodableMedia(
            f"{media.describe(kind)} declares {channels} audio channels; at most "
            f"{contract.AUDIO_MAX_INPUT_CHANNELS} are accepted (mix down to mono or stereo)"
        )


def check_rate(sr: int, kind: str) -> int:
    """`sr` if it is an accepted input sample rate; else UndecodableMedia naming the accepted range."""
    if not contract.AUDIO_MIN_INPUT_RATE <= sr <= contract.AUDIO_MAX_INPUT_RATE:
        raise UndecodableMedia(
            f"{media.describe(kind)} declares a sample rate of {sr} Hz; accepted rates are "
            f"{contract.AUDIO_MIN_INPUT_RATE}-{contract.AUDIO_MAX_INPUT_RATE} Hz"
        )
    return sr


def resample(wave: np.ndarray, sr: int) -> np.ndarray:
    """float32 mono at contract.SAMPLE_RATE, checked finite afterwards.

    soxr high quality, computed in float64 so that no overshoot of a loud input can overflow. The wave is fed
    to soxr's streaming resampler RESAMPLE_BLOCK_S at a time, each block made float64 only as it is fed, and
    the output is written into one float32 array: the extra memory is a block's, not a float64 copy of the
    whole source-rate wave (4x a 48 kHz stereo WAV's size while it decoded). The result is bit for bit
    `soxr.resample` of the whole wave in float64, which feeds soxr in blocks itself
    (tests/features/test_resample_blocks.py)."""
    if sr == contract.SAMPLE_RATE:
        return np.ascontiguousarray(np.asarray(wave, np.float32))
    wave = np.asarray(wave).reshape(-1)
    # soxr.resample's bound on the output (python-soxr: input length * out rate / in rate + 1, truncated)
    out = np.empty(int(float(wave.size) * contract.SAMPLE_RATE / sr + 1), np.float32)
    stream = soxr.ResampleStream(sr, contract.SAMPLE_RATE, 1, dtype="float64", quality="HQ")
    block, done = max(1, int(RESAMPLE_BLOCK_S * sr)), 0
    for start in range(0, max(wave.size, 1), block):
        last = start + block >= wave.size
        piece = stream.resample_chunk(wave[start : start + block].astype(np.float64), last=last)
        take = min(piece.size, out.size - done)
        out[done : done + take] = piece[:take]  # cast in place: no float32 copy of the block
        done += take
    return check_wave(out[:done], "the resampled samples")


def over_limit(seconds: float, limit: float) -> bool:
    """Longer than `limit` by more than codec framing explains (media.DURATION_GRACE_S)."""
    return seconds > limit + media.DURATION_GRACE_S


def too_long(seconds: float, limit: float, *, so_far: bool = False) -> TooLarge:
    """`so_far`: `seconds` were decoded before decoding stopped, the whole may be longer."""
    return TooLarge(f"audio lasts {'over ' if so_far else ''}{seconds:.1f} s; the limit is {limit:g} s")


def cut_to(wave: np.ndarray | None, limit: float) -> np.ndarray | None:
    """A model-rate wave within `limit` seconds (what codec framing ran past it is dropped); None stays."""
    return None if wave is None else wave[: int(round(limit * contract.SAMPLE_RATE))]


def to_model_rate(wave: np.ndarray | None, sr: int, kind: str) -> np.ndarray | None:
    """Decoded samples checked and resampled to contract.SAMPLE_RATE; None when there are none."""
    if wave is None or wave.size == 0:
        return None
    return resample(check_wave(wave, f"the mixed samples of this {media.describe(kind)}"), sr)


# --- windows ----------------------------------------------------------------------------------------------
def window_count(n_samples: int) -> int:
    """Windows of WINDOW_SAMPLES with HOP_SAMPLES hop covering n_samples (the last padded); 0 for none."""
    return _count(n_samples, contract.WINDOW_SAMPLES, contract.HOP_SAMPLES, contract.SAMPLE_RATE)


def _count(n: int, window: int, hop: int, per_second: float) -> int:
    """Windows covering n items; a tail of at most WINDOW_TAIL_TOLERANCE_S past the last window is dropped.

    A tail of exactly the tolerance (a 3.1-s clip: 0.1 s past its one window) adds none, and one sample more
    adds one, so the count needs the recording's exact length: a container's codec padding is cut by the
    decoder (`avaudio`: an MP4's AAC ends at its declared duration, as its WAV does), not forgiven here."""
    if n <= 0:
        return 0
    tolerance = int(round(contract.WINDOW_TAIL_TOLERANCE_S * per_second))
    return 1 + max(0, math.ceil((n - window - tolerance) / hop))


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS)."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20.0 * math.log10(max(rms, _EPS))


def normalisation_gain_db(level_dbfs: float) -> float:
    """Gain toward AUDIO_TARGET_RMS_DBFS with a soft knee above AUDIO_SILENCE_DBFS (see the module doc)."""
    if level_dbfs <= contract.AUDIO_SILENCE_DBFS:
        return 0.0
    return min(
        contract.AUDIO_TARGET_RMS_DBFS - level_dbfs,
        MAX_GAIN_DB,
        level_dbfs - contract.AUDIO_SILENCE_DBFS,
    )


def normalise_window(window: np.ndarray) -> np.ndarray:
    """One window scaled by normalisation_gain_db of its RMS level (float32)."""
    gain = 10.0 ** (normalisation_gain_db(rms_dbfs(window)) / 20.0)
    return (np.asarray(window, np.float64) * gain).astype(np.float32)


def window_levels(wave: np.ndarray | None, n: int) -> np.ndarray:
    """[n] float64 `rms_dbfs` of each window's real samples: measured once per clip for both its gain
    (`window_gains`) and the silence rule (`windows.silent_windows`). Padding is not measured, so a short tail
    does not look quieter and earn extra gain; a window holding no sample reads as `rms_dbfs` of none."""
    if wave is None:
        return np.full(n, rms_dbfs(np.zeros(0, np.float32)))
    wave, hop = np.asarray(wave, np.float32).reshape(-1), contract.HOP_SAMPLES
    return np.array(
        [rms_dbfs(wave[i * hop : i * hop + contract.WINDOW_SAMPLES]) for i in range(n)], np.float64
    )


def window_gains(levels: np.ndarray) -> np.ndarray:
    """[n] float32 level-normalisation gain of each window of `window_levels`: what `windows` multiplies
    window i by (1 for a window without audio, all zeros anyway)."""
    return np.array(
        [np.float32(10.0 ** (normalisation_gain_db(float(db)) / 20.0)) for db in levels], np.float32
    )


def windows(wave: np.ndarray | None, n_windows: int | None = None) -> np.ndarray:
    """[N, WINDOW_SAMPLES] float32: window i = samples [i*HOP, i*HOP + WINDOW), zero-padded, times its gain.

    N is window_count(len(wave)) unless n_windows is given (windows past the end are all zeros). This is the
    PyTorch model's input; the ensemble gets the same sound once (`clip_rows`) and cuts these windows itself.
    """
    size = 0 if wave is None else int(np.asarray(wave).size)
    n = window_count(size) if n_windows is None else int(n_windows)
    rows, gains = clip_rows(wave, n)
    return windows_from_rows(rows, gains)


def clip_rows(
    wave: np.ndarray | None, n: int, levels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's AUDIO [n, audio_row_samples(n)] and WINDOW_GAIN [n, 1] for n windows of `wave`
    (`levels`: its `window_levels`, when the caller measured them already).

    AUDIO is the clip's samples laid row-major over the n rows, zero-padded past the end (or all zeros
    without audio): each sample crosses to Triton once, where `windows` would send most of them three times.
    """
    out = np.zeros(contract.batch_shape(contract.AUDIO, n), np.float32)
    gains = window_gains(window_levels(wave, n) if levels is None else levels)
    if wave is not None and n:
        flat = out.reshape(-1)
        wave = np.asarray(wave, np.float32).reshape(-1)[: flat.size]
        flat[: wave.size] = wave
        check_wave(out, "the clip's audio")
    return out, gains[:, None]


def windows_from_rows(rows: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """The windows [n, WINDOW_SAMPLES] an ensemble request's AUDIO and WINDOW_GAIN stand for (bit-exact
    with `windows` of the same sound): how the PyTorch model and the ONNX Runtime chain read a request."""
    n = rows.shape[0]
    flat = np.asarray(rows, np.float32).reshape(-1)
    out = np.zeros((n, contract.WINDOW_SAMPLES), np.float32)
    gains = np.asarray(gains, np.float32).reshape(-1)
    for i in range(n):
        piece = flat[i * contract.HOP_SAMPLES : i * contract.HOP_SAMPLES + contract.WINDOW_SAMPLES]
        out[i, : piece.size] = piece * gains[i]
    return check_wave(out, "the level-normalised windows")
