"""WAV/FLAC/OGG/AIFF/CAF/W64 (`media.SOUND_FILE_KINDS`) decoded by libsndfile (soundfile), block by block
and mixed down as read.

Used by `audio.load_audio`; `load` decides what an Ogg or CAF libsndfile cannot read, or a file that yields
no sample, becomes. The checks and errors are `audio`'s.
"""

from __future__ import annotations

import numpy as np
import soundfile as sf

from avpenet.errors import InputError, UndecodableMedia
from avpenet.features import audio, avaudio, media, memfile, truncation

# What libsndfile's failures surface as through soundfile (a codec that cannot seek raised ValueError).
LIBSNDFILE_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError)
# libsndfile's frame count for a file that leaves its length unknown (SF_COUNT_MAX, 2^63 - 1: a FLAC whose
# STREAMINFO total is 0, as FFmpeg writes to a pipe); no real file declares half of it.
UNKNOWN_FRAMES = 1 << 62


class _Upload(memfile.ViewFile):
    """An upload as libsndfile's virtual file. A seek before the start stops at the start: a ValueError there
    is raised inside soundfile's cffi callback, and Python would print that traceback to stderr for every
    AIFF cut inside its header (libsndfile's AIFF reader seeks there; it refuses the file either way)."""

    CLAMP_BEFORE_START = True


def load(source: media.Source, kind: str, limit: float) -> tuple[np.ndarray | None, int]:
    """A file of `media.SOUND_FILE_KINDS` decoded by libsndfile; an Ogg or CAF it cannot decode (a codec it
    lacks, a CAF cut short) or that yields no sample is tried with PyAV (`media.SOUND_THEN_AV_KINDS`); one
    it refuses for a limit (rate, channels, duration) is not, PyAV would refuse it too. The file declares
    audio, so when no sample decodes (also when it is cut before FFmpeg finds its streams) it is
    UndecodableMedia, never "no audio" (which would score the clip on the face alone); None only for an Ogg
    without an audio stream.

    libsndfile's failures are UndecodableMedia with its own message (`_reason`), but a file cut inside its
    header is refused as cut (`truncation`: its reason for the bytes left misleads); a decoder error after
    some samples drops the damaged tail and keeps the start (`_mono`), as `avaudio` does."""
    declared = None
    try:
        wave, sr, declared = read(source, kind, limit)
    except InputError:
        raise
    except LIBSNDFILE_ERRORS as exc:
        if kind not in media.SOUND_THEN_AV_KINDS:
            if truncation.cut_short(source, kind):
                raise truncation.cut(kind) from None  # libsndfile's reason for a cut header misleads
            raise UndecodableMedia(
                f"{media.describe(kind)} cannot be decoded ({_reason(exc)}); "
                "send the complete, uncorrupted recording"
            ) from None
        if truncation.before_samples(source, kind):
            raise truncation.cut(kind) from None  # FFmpeg would read a CAF's edit count as samples
        try:
            wave, sr = avaudio.read(source, kind, limit)  # a codec libsndfile lacks: PyAV's errors stand...
        except UndecodableMedia as err:
            if not media.ended_early(err):
                raise
            wave = None  # ... but one cut in its headers ("End of file") is worded as a cut file is, below
        else:
            if wave is None:
                return None, sr
    else:
        # libsndfile reads a Vorbis cut in its first page as 0 frames
        if wave.size == 0 and kind in media.SOUND_THEN_AV_KINDS:
            try:
                wave, sr = avaudio.read(source, kind, limit)
            except UndecodableMedia:
                wave = None
    if wave is None or wave.size == 0:
        if declared == 0 and kind != "ogg" and not truncation.cut_short(source, kind):
            raise UndecodableMedia(
                f"{media.describe(kind)} holds no audio samples (an empty recording); "
                "send a recording with sound"
            )
        raise truncation.cut(kind)
    return wave, sr


def read(source: media.Source, kind: str, limit: float) -> tuple[np.ndarray, int, int]:
    """(mono float32 samples, their rate, the frames the header declares: 0 when it leaves them unknown) of
    what libsndfile decodes; raises `audio`'s limits and libsndfile's own errors (LIBSNDFILE_ERRORS, which
    `load` words).

    Memory is the mono wave's, however many channels a file has: each block is read into one buffer and
    mixed down. Only the frames a read returns are used: libsndfile may decode fewer than it declared (a WAV
    of MP3 data cut short), where `SoundFile.blocks` handed the rest back as unfilled memory (garbage
    samples). Reads ask for a frame count, so codecs libsndfile cannot seek in (GSM 6.10, G.721) decode too.
    A limit refused from a description the file ends inside (`truncation.description_cut`) is refused as cut.
    A length the file leaves unknown (`UNKNOWN_FRAMES`: a FLAC a streaming encoder wrote to a pipe) is not
    checked before decoding: the decoded length is held to the limit as it is read (`_mono`).
    """
    with sf.SoundFile(media.as_file(source, _Upload)) as f:
        try:
            sr = audio.check_rate(int(f.samplerate), kind)
            audio.check_channels(int(f.channels), kind)
            declared = int(f.frames) if f.frames < UNKNOWN_FRAMES else None
            if declared is not None and audio.over_limit(declared / sr, limit):
                raise audio.too_long(declared / sr, limit)
        except InputError:
            if truncation.description_cut(source, kind):  # read from a header cut short: not the file's
                raise truncation.cut(kind) from None
            raise
        return _mono(f, kind, declared, limit), sr, declared or 0


def _reason(exc: Exception) -> str:
    """libsndfile's own message ("flac decoder lost sync", "No 'data' chunk marker"): a fixed text of its
    error table, never bytes of the file; the exception's class for anything else."""
    text = str(getattr(exc, "error_string", "") or "").removeprefix("Error : ").strip().rstrip(".")
    return text[:120] or type(exc).__name__


def _mono(f: sf.SoundFile, kind: str, declared: int | None, limit: float) -> np.ndarray:
    """The decoded frames of `f` (at most `declared`), checked and mixed down block by block into one array
    of the declared length (the duration limit bounds it; pages no sample reaches are never touched), which
    shrinks in place to what decoded: the mono wave is held once, never as blocks and then their join.

    A length left unknown (None) is never allocated (libsndfile says 2^63 - 1 frames): the array grows as
    frames decode, up to the limit plus `media.DURATION_GRACE_S`, and one frame past that is TooLarge, as
    PyAV's decoding refuses a file once it has decoded past the limit (`avaudio`)."""
    what = f"the samples of this {media.describe(kind)}"
    most = int((limit + media.DURATION_GRACE_S) * f.samplerate) if declared is None else declared
    want = most + (declared is None)  # an unknown length reads one frame past the most it may hold
    buf = np.empty((max(1, min(audio.READ_BLOCK_FRAMES, want)), f.channels), np.float32)
    mono = np.empty(max(len(buf) if declared is None else declared, 0), np.float32)
    total = 0
    while total < want:
        try:
            got = _read(f, buf, min(len(buf), want - total), declared is not None)
        except sf.LibsndfileError:
            if total == 0:
                raise
            break  # a damaged tail: the read it ends is dropped
        if not got:
            break  # decoded less than declared (a truncated file): what decoded is kept
        if total + got > most:
            raise audio.too_long((total + got) / f.samplerate, limit, so_far=True)
        if total + got > len(mono):  # a length left unknown: grow (realloc), at most to `most`
            mono.resize(min(max(2 * len(mono), total + got), most), refcheck=False)
        mono[total : total + got] = audio.mix_down(audio.check_wave(buf[:got], what), axis=1)
        total += got
    if total < len(mono):
        mono.resize(total, refcheck=False)  # realloc: no second array, the decoded start stays
    return mono


def _read(f: sf.SoundFile, buf: np.ndarray, frames: int, known: bool) -> int:
    """Frames libsndfile decodes into `buf` (at most `frames`). `SoundFile.read` then seeks to where the read
    ended; a FLAC cut short fails that seek, so the read the cut ends is dropped (`_mono`). But libsndfile
    cannot seek to the end of a FLAC whose length is unknown ("Internal psf_fseek() failed"), which lost
    the last read of each such file: its frames are read by libsndfile's own sf_readf_float, with no seek,
    and an error raised as `SoundFile.read` raises it (also after some frames: a cut file)."""
    if known:
        return len(f.read(frames, out=buf))
    got = sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", buf.ctypes.data), frames)
    if code := sf._snd.sf_error(f._file):
        raise sf.LibsndfileError(code)
    return int(got)
