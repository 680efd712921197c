"""The tensor contract: every name, shape, dtype and signal constant the project shares.

Synthesis, features, the PyTorch model, ONNX export, the Triton configs, the gateway's client and the tests
all read this module; nothing else spells a tensor name or a sample rate. Shapes here exclude Triton's
batch dimension (every model is batched with ``MAX_BATCH_SIZE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

# --- Audio signal ---
SAMPLE_RATE: Final = 16_000  # Hz; every decoder resamples to this
WINDOW_SECONDS: Final = 3.0  # one model input window
HOP_SECONDS: Final = 1.0  # windows of a longer clip overlap by 2 s
WINDOW_SAMPLES: Final = int(SAMPLE_RATE * WINDOW_SECONDS)  # 48000
HOP_SAMPLES: Final = int(SAMPLE_RATE * HOP_SECONDS)  # 16000
N_FFT: Final = 400  # 25 ms analysis window
HOP_LENGTH: Final = 160  # 10 ms hop
N_MELS: Final = 128
F_MIN: Final = 50.0
F_MAX: Final = 8_000.0
MEL_FRAMES: Final = 300  # first 300 of the 301 centred STFT frames of a 3 s window
LOG_MEL_FLOOR: Final = 1e-10  # log(max(mel_power, floor)); natural log
WINDOW_TAIL_TOLERANCE_S: Final = 0.1  # a tail of at most this after the last window adds no window
AUDIO_TARGET_RMS_DBFS: Final = -20.0  # windows are RMS-normalised to this level (silence is left as is)
AUDIO_SILENCE_DBFS: Final = -60.0  # below this RMS a window counts as silent (no normalisation gain)
# Below this RMS a window holds no recording (a muted or dead input, zero padding; 16-bit dither: ~-96 dBFS),
# and beside a face its audio is masked (features.windows). Training's quietest rooms are about -67 dBFS (the
# test render's quietest window: -62.9): audio the model learned from, silence that is information, stays.
AUDIO_NO_SIGNAL_DBFS: Final = -80.0
AUDIO_MAX_GAIN_DB: Final = 20.0  # the most a quiet window is amplified (the window_gain input's bound)
# Sample rates an upload may declare: telephone-band 8 kHz up to studio 192 kHz. Outside them a header is
# forged or broken (1 Hz would stretch a few KB into minutes; GHz rates cost seconds of CPU for nothing).
AUDIO_MIN_INPUT_RATE: Final = 8_000
AUDIO_MAX_INPUT_RATE: Final = 192_000
# Channels an upload may carry: mono to 7.1 (or an 8-microphone array). Ogg Vorbis, Opus and FLAC allow up to
# 255, and decoding costs CPU per channel: a few hundred KB of 255-channel silence is minutes of decoding.
AUDIO_MAX_INPUT_CHANNELS: Final = 8

# --- Video / face track ---
FPS: Final = 10  # face tracks are sampled at 10 frames per second
FRAMES_PER_WINDOW: Final = int(FPS * WINDOW_SECONDS)  # 30
FRAMES_PER_HOP: Final = int(FPS * HOP_SECONDS)  # 10
SAMPLES_PER_FRAME: Final = SAMPLE_RATE // FPS  # 1600: the audio one frame spans (a stream's tick)
N_LANDMARKS: Final = 478  # mediapipe FaceLandmarker (468 mesh + 10 iris)

# mediapipe FaceLandmarker blendshape categories, in the order the tracker reports them.
BLENDSHAPE_NAMES: Final[tuple[str, ...]] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft",
    "noseSneerRight",
)  # fmt: skip
N_BLENDSHAPES: Final = len(BLENDSHAPE_NAMES)  # 52

# Face-track arrays (the synth `.npz` format and the tracker's output): name -> (per-clip shape, dtype).
# T is the number of frames at FPS. Landmarks are in mediapipe's normalised image coordinates
# (x, y in [0, 1] of width/height, z relative depth); head_pose is the tracker's 4x4 facial transform.
TRACK_ARRAYS: Final[dict[str, tuple[tuple[str | int, ...], type]]] = {
    "landmarks": (("T", N_LANDMARKS, 3), np.float32),
    "blendshapes": (("T", N_BLENDSHAPES), np.float32),
    "face_present": (("T",), np.bool_),
    "head_pose": (("T", 4, 4), np.float32),
    "image_size": ((2,), np.int32),  # (width, height) in pixels of the frames the track came from
}

# The landmark subset the visual features keep (mediapipe mesh indices), grouped by face region: a 68-point
# style layout that covers every region the PSPI action units move.
LANDMARK_GROUPS: Final[dict[str, tuple[int, ...]]] = {
    "jaw": (234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454),
    "brow_right": (70, 63, 105, 66, 107),
    "brow_left": (336, 296, 334, 293, 300),
    "nose_bridge": (168, 6, 197, 195, 5),
    "nose_base": (4, 98, 97, 2, 326, 327),
    "eye_right": (33, 160, 158, 133, 153, 144),
    "eye_left": (362, 385, 387, 263, 373, 380),
    "mouth_outer": (61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181),
    "mouth_inner": (78, 82, 13, 312, 308, 317, 14, 87),
}
LANDMARK_SUBSET: Final[tuple[int, ...]] = tuple(i for g in LANDMARK_GROUPS.values() for i in g)  # 70 points

# Action units the PSPI uses; where blendshapes are blind (AU6, AU9) the proxy comes from landmark geometry.
AU_NAMES: Final[tuple[str, ...]] = ("AU4", "AU6", "AU7", "AU9", "AU10", "AU43")
HEAD_POSE_NAMES: Final[tuple[str, ...]] = ("yaw", "pitch", "roll")  # radians

# Per-frame visual feature vector, in this order: (segment name, width).
VISUAL_FEATURE_SEGMENTS: Final[tuple[tuple[str, int], ...]] = (
    ("landmarks_xy", 2 * len(LANDMARK_SUBSET)),  # canonical-frame (Procrustes-aligned) x, y of the subset
    ("blendshapes", N_BLENDSHAPES),
    ("au_proxies", len(AU_NAMES)),
    ("head_pose", len(HEAD_POSE_NAMES)),
)
VISUAL_FEATURE_DIM: Final = sum(w for _, w in VISUAL_FEATURE_SEGMENTS)


def window_end_s(i: int) -> float:
    """Where window i of a clip or stream ends, in seconds of media (it starts at i * HOP_SECONDS)."""
    return i * HOP_SECONDS + WINDOW_SECONDS


def feature_slice(segment: str) -> slice:
    """Columns of one named segment inside the per-frame visual feature vector."""
    start = 0
    for name, width in VISUAL_FEATURE_SEGMENTS:
        if name == segment:
            return slice(start, start + width)
        start += width
    raise KeyError(segment)


# --- Labels ---
AGE_GROUPS: Final[tuple[str, ...]] = ("neonate", "adult", "unknown")  # index = the model's age_group input
LABELLED_AGE_GROUPS: Final = AGE_GROUPS[:2]  # a dataset's clips; "unknown" is only a request value
UNKNOWN_AGE: Final = AGE_GROUPS.index("unknown")  # a request that names no age group
SCORE_MIN: Final = 0.0
SCORE_MAX: Final = 10.0
LEVELS: Final[tuple[str, ...]] = ("low", "moderate", "high")
LEVEL_UPPER_BOUNDS: Final[tuple[float, ...]] = (3.0, 6.0, 10.0)  # low [0,3], moderate (3,6], high (6,10]
INTERVAL_COVERAGE: Final = 0.90  # the served prediction interval
LABEL_COLUMNS: Final[tuple[str, ...]] = (
    "clip_id", "subject_id", "age_group", "audio", "visual", "video", "duration_s",
    "score", "rater_1", "rater_2", "rater_3", "level",
)  # fmt: skip


def level_of(score: float) -> str:
    """The paper's three pain levels: low [0,3], moderate (3,6], high (6,10]."""
    for name, upper in zip(LEVELS, LEVEL_UPPER_BOUNDS, strict=True):
        if score <= upper:
            return name
    return LEVELS[-1]


def age_index(age_group: str) -> int:
    """Index of an age group for the model's embedding; raises ValueError on unknown names."""
    try:
        return AGE_GROUPS.index(age_group)
    except ValueError:
        raise ValueError(f"age_group must be one of {', '.join(AGE_GROUPS)}; got {age_group!r}") from None


# --- Model widths ---
EMBED_DIM: Final = 128  # token width D shared by both encoders and the fusion
AUDIO_TOKENS: Final = 38  # audio encoder time steps: 300 mel frames after three stride-2 stages (~80 ms each)
VISUAL_TOKENS: Final = FRAMES_PER_WINDOW  # one visual token per video frame


# --- Triton tensors ---
@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a served model: name, Triton dtype and shape without the batch dimension."""

    name: str
    dtype: str  # Triton dtype name, e.g. "FP32"
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> type:
        return TRITON_TO_NUMPY[self.dtype]


TRITON_TO_NUMPY: Final[dict[str, type]] = {"FP32": np.float32, "INT64": np.int64, "BYTES": np.object_}

MAX_BATCH_SIZE: Final = 64  # every model of the ensemble batches up to this many windows
# A Triton call's default deadline (retries included), and per window it carries when that is longer (a 60-s
# clip: 58 windows -> 29 s): the gateway's defaults.
DEADLINE_S: Final = 10.0
DEADLINE_PER_WINDOW_S: Final = 0.5

# The PyTorch model's audio input (training, evaluation, the naive peer): one normalised 3 s window per row.
WAVEFORM = TensorSpec("waveform", "FP32", (WINDOW_SAMPLES,))  # 16 kHz mono, normalised window

# Public ensemble inputs (one row per 3 s window). The sound crosses to Triton once, not as overlapping
# windows: AUDIO holds the clip's 16 kHz samples laid row-major over the request's N rows (row length
# audio_row_samples(N), zero-padded), WINDOW_GAIN the level-normalisation gain of each window; the
# audio_frontend cuts the windows itself (each 1 s hop's STFT frames are computed once, not three times).
AUDIO = TensorSpec("audio", "FP32", (-1,))
WINDOW_GAIN = TensorSpec("window_gain", "FP32", (1,))  # linear gain of window i (features.audio.window_gains)
VISUAL_FEATURES = TensorSpec("visual_features", "FP32", (FRAMES_PER_WINDOW, VISUAL_FEATURE_DIM))
FRAME_MASK = TensorSpec("frame_mask", "FP32", (FRAMES_PER_WINDOW,))  # 1 = face found and usable
AUDIO_PRESENT = TensorSpec("audio_present", "FP32", (1,))  # 0 = the clip has no audio track
AGE_GROUP = TensorSpec("age_group", "INT64", (1,))  # index into AGE_GROUPS

# Internal tensors between ensemble steps (FP32 so no conversion happens between steps).
LOG_MEL = TensorSpec("log_mel", "FP32", (1, N_MELS, MEL_FRAMES))
AUDIO_TOKENS_T = TensorSpec("audio_tokens", "FP32", (AUDIO_TOKENS, EMBED_DIM))
VISUAL_TOKENS_T = TensorSpec("visual_tokens", "FP32", (VISUAL_TOKENS, EMBED_DIM))

# Public ensemble outputs.
SCORE = TensorSpec("score", "FP32", (1,))  # 0-10
CLASS_PROBS = TensorSpec("class_probs", "FP32", (len(LEVELS),))  # softmax over LEVELS
LOG_VARIANCE = TensorSpec("log_variance", "FP32", (1,))  # predictive spread of the score
INTERVAL = TensorSpec("interval_90", "FP32", (2,))  # calibrated 90% interval (low, high), clipped to 0-10
MODALITY_WEIGHTS = TensorSpec("modality_weights", "FP32", (2,))  # (audio, visual) contributions, sum to 1
# P(adult) the fusion's age head reads from the window's sound and face: the age a request without an age
# group is scored as; NOT_READ where the part has no fitted head. Fusion 16 added it: a repository rolled
# back to an older fusion serves without it, so clients read it only when the answer carries it.
ADULT_PROBABILITY = TensorSpec("adult_probability", "FP32", (1,))
NOT_READ: Final = -1.0
# A request that names its age group is told when the clip reads as the other group this surely: P(the named
# group) below it. Chosen before it was measured; on the 313 test clips it questioned none named right, and
# 93% of those named wrong with sound and face with fusion 16, 90% with the served fusion 22
# (docs/EVALUATION.md, *A named age group questioned*).
AGE_CONTRADICTED_BELOW: Final = 0.05
PROBABILITY_DECIMALS: Final = 4  # a P(adult) as answers show it; the age checks decide on that value


@dataclass(frozen=True)
class ModelSpec:
    """A model of the Triton repository: its name and its input and output tensors."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


AUDIO_FRONTEND = ModelSpec("audio_frontend", (AUDIO, WINDOW_GAIN), (LOG_MEL,))
AUDIO_ENCODER = ModelSpec("audio_encoder", (LOG_MEL,), (AUDIO_TOKENS_T,))
VISUAL_ENCODER = ModelSpec("visual_encoder", (VISUAL_FEATURES, FRAME_MASK), (VISUAL_TOKENS_T,))
FUSION = ModelSpec(
    "fusion",
    (AUDIO_TOKENS_T, VISUAL_TOKENS_T, FRAME_MASK, AUDIO_PRESENT, AGE_GROUP),
    (SCORE, CLASS_PROBS, LOG_VARIANCE, INTERVAL, MODALITY_WEIGHTS, ADULT_PROBABILITY),
)
ENSEMBLE = ModelSpec(
    "avpenet",
    (AUDIO, WINDOW_GAIN, VISUAL_FEATURES, FRAME_MASK, AUDIO_PRESENT, AGE_GROUP),
    FUSION.outputs,
)
# The outputs every served ensemble has (a probe or client that asks for more fails on a rolled-back one).
REQUIRED_OUTPUTS: Final[tuple[TensorSpec, ...]] = tuple(t for t in ENSEMBLE.outputs if t != ADULT_PROBABILITY)
# The PyTorch model's inputs, in its argument order: the ensemble's, with the sound as windows.
MODEL_INPUTS: Final[tuple[TensorSpec, ...]] = (WAVEFORM, *ENSEMBLE.inputs[2:])


def audio_row_samples(n_windows: int) -> int:
    """Row length of AUDIO for n windows: the fewest samples per row whose n rows hold all n windows."""
    if n_windows <= 0:
        return 0
    needed = (n_windows - 1) * HOP_SAMPLES + WINDOW_SAMPLES
    return -(-needed // n_windows)


def batch_shape(spec: TensorSpec, rows: int) -> tuple[int, ...]:
    """The full shape of `spec` for a request of `rows` windows (AUDIO's row length resolved)."""
    if spec.name == AUDIO.name:
        return (rows, audio_row_samples(rows))
    return (rows, *spec.shape)


def one_window_requests(model_inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PyTorch model's N windows (MODEL_INPUTS) as N stacked one-window ensemble requests: a window is
    already level-normalised, so its AUDIO row is the window itself (audio_row_samples(1) == WINDOW_SAMPLES)
    and its WINDOW_GAIN 1."""
    out = {k: v for k, v in model_inputs.items() if k != WAVEFORM.name}
    windows = model_inputs[WAVEFORM.name]
    out[AUDIO.name] = windows
    out[WINDOW_GAIN.name] = np.ones((len(windows), 1), np.float32)
    return out


def zero_inputs(model: ModelSpec, rows: int) -> dict[str, np.ndarray]:
    """All-zero inputs of `model` for `rows` windows: silence, no face, age index 0 (valid for every part)."""
    return {t.name: np.zeros(batch_shape(t, rows), t.numpy_dtype) for t in model.inputs}


PARTS: Final[tuple[ModelSpec, ...]] = (AUDIO_FRONTEND, AUDIO_ENCODER, VISUAL_ENCODER, FUSION)
MODELS: Final[tuple[ModelSpec, ...]] = (*PARTS, ENSEMBLE)
