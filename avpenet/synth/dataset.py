"""AVPE-Synth orchestration: subjects, clip scenarios, rater labels, and parallel rendering of the files.

Two stages keep the output deterministic for any worker count:
1. `plan()` (main process, cheap) draws every discrete fact of every clip — latent pain, duration,
   expressivity, vocalising or not, occlusion, missing files, rater scores — from per-subject and per-clip
   seeds derived from (seed, index). labels.csv depends on the plan only.
2. `make_clip()` (worker processes) synthesises the signals of one clip from its own seed (seed, index)
   and writes its WAV / NPZ / MP4, returning the measured truth (SNR, missing-face fraction ...).

The generative model and its parameters are documented in docs/DATA.md.

Why one module over 300 lines: the clip plan, the rater model and the writer are one generative
story whose parameters are read together with docs/DATA.md.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from avpenet import augment, contract, data
from avpenet.durable import replace_bytes, replace_text
from avpenet.features import tracked
from avpenet.synth import face, noise, skin, sources, vocal
from avpenet.synth import progress as synth_progress

# --- defaults mirror the paper: 428 subjects (215 neonates, 213 adults), 3,247 clips ------------------------
DEFAULT_SUBJECTS = 428
DEFAULT_NEONATES = 215
DEFAULT_CLIPS = 3247
MIN_CLIPS_PER_SUBJECT = 3
RENDER_ALL = "all"  # plan.json's "render" for `--render-video all` (the default), as the option is written
GENERATOR = "avpe-synth"  # named in DIR/plan.json with the options that decide the subjects
DURATION_S = (3.0, 6.0)  # clip length, in steps of one video frame
SAMPLE_RATES = (16_000, 44_100, 48_000)  # WAV rates as hospitals hand them over; features resample
LEVEL_MIX = (0.38, 0.31, 0.31)  # average share of low / moderate / high latent pain
LEVEL_CONCENTRATION = 6.0  # Dirichlet concentration of a subject's own level mix (lower = more varied)

# Raters: three per clip from a pool per age group; neonates on NIPS 0-7 rescaled ×10/7, adults integer NRS.
RATER_SIGMA = 0.8  # per-rater noise, points on the 0-10 scale, before rounding to the scale's integers
RATER_BIAS_SD = 0.25  # each pool rater's constant leniency/severity (0-10 points)
RATERS_PER_POOL = 8
NIPS_MAX = 7

# Expressivity: arousal = gain · pain/10 + noise; weak subjects have gain WEAK_GAIN in one modality.
WEAK_AUDIO_SHARE = 0.14
WEAK_FACE_SHARE = 0.14
STRONG_GAIN = (0.85, 1.15)
WEAK_GAIN = (0.1, 0.3)
AUDIO_AROUSAL_NOISE = 0.10
FACE_AROUSAL_NOISE = 0.06
SHARED_AROUSAL_NOISE = 0.03  # distress not caused by pain (hunger, agitation) seen by both modalities
VOCAL_THRESHOLD = 0.2  # arousal at which half the clips contain pain vocalisation
VOCAL_SLOPE = 0.06

# Recording conditions.
SNR_DB = (-5.0, 30.0)  # drawn as -5 + 35·Beta(2, 1.5): mean ≈ 15 dB
OCCLUDED_SHARE = {"neonate": 0.11, "adult": 0.08}  # pacifier / surgical or oxygen mask over the lower face
FACE_MOSTLY_MISSING_SHARE = 0.045  # turned away, covered by hands/blanket, out of frame
SHORT_DROPOUT_SHARE = 0.3  # clips with a few short tracking losses
MISSING_AUDIO_SHARE = 0.015  # clip delivered without an audio file
MISSING_VISUAL_SHARE = 0.015  # clip delivered without a landmarks file
AUDIO_CONFOUNDERS = {
    "neonate": {"fussing": 0.2, "cough": 0.06, "babble": 0.15},
    "adult": {"cough": 0.12, "babble": 0.2, "sigh": 0.1},
}
FACE_CONFOUNDERS = {
    "neonate": {"smile": 0.05, "talking": 0.05, "yawn": 0.06},  # "talking" = mouthing/sucking for neonates
    "adult": {"smile": 0.08, "talking": 0.12, "yawn": 0.05},
}
TRUTH_COLUMNS = (
    "clip_id", "subject_id", "age_group", "latent_pain", "audio_arousal", "face_arousal", "vocalizing",
    "voiced_fraction", "confounder", "snr_db", "sample_rate", "face_missing_fraction", "lower_face_occluded",
    "weak_audio", "weak_face", "audio_missing", "visual_missing", "rendered",
)  # fmt: skip


@dataclass(frozen=True)
class Subject:
    index: int
    subject_id: str
    age_group: str
    weak_audio: bool
    weak_face: bool
    audio_gain: float
    face_gain: float
    level_mix: tuple[float, float, float]


@dataclass
class ClipPlan:
    """Everything discrete about one clip, drawn in the main process (labels depend only on this)."""

    seed: int
    index: int
    clip_id: str
    subject: Subject
    duration_s: float
    latent_pain: float
    audio_arousal: float
    face_arousal: float
    vocalizing: bool
    sample_rate: int
    snr_db: float
    audio_confounders: tuple[str, ...]
    face_confounders: tuple[str, ...]
    occluded: bool
    face_mostly_missing: bool
    short_dropouts: bool
    audio_missing: bool
    visual_missing: bool
    raters: tuple[float, float, float]
    render: bool = False
    faces: tuple[str, ...] = sources.DEFAULT_FACES  # the photos its subject's face may come from
    skin_tones: tuple[int | None, ...] = (None,)  # the Monk Skin Tones it may be recoloured to (None: none)
    truth: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        return float(np.median(self.raters))

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * contract.FPS)


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per (seed, purpose, index): results never depend on processing order."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *key])


_SUBJECT, _CLIP_PLAN, _CLIP_SIGNAL, _IDENTITY, _POOL, _RENDER = 1, 2, 3, 4, 5, 6


def make_subjects(seed: int, n_subjects: int) -> list[Subject]:
    """Age groups in the paper's proportion; exactly round(share·N) weak-audio and weak-face subjects."""
    rng = _rng(seed, _SUBJECT)
    n_neo = round(n_subjects * DEFAULT_NEONATES / DEFAULT_SUBJECTS)
    ages = np.array(["neonate"] * n_neo + ["adult"] * (n_subjects - n_neo))[rng.permutation(n_subjects)]
    order = rng.permutation(n_subjects)
    n_wa, n_wf = round(n_subjects * WEAK_AUDIO_SHARE), round(n_subjects * WEAK_FACE_SHARE)
    weak_audio = np.zeros(n_subjects, bool)
    weak_face = np.zeros(n_subjects, bool)
    weak_audio[order[:n_wa]] = True
    weak_face[order[n_wa : n_wa + n_wf]] = True
    out = []
    for i in range(n_subjects):
        srng = _rng(seed, _SUBJECT, i)
        mix = srng.dirichlet(np.asarray(LEVEL_MIX) * LEVEL_CONCENTRATION)
        out.append(
            Subject(
                index=i,
                subject_id=f"S{i + 1:04d}",
                age_group=str(ages[i]),
                weak_audio=bool(weak_audio[i]),
                weak_face=bool(weak_face[i]),
                audio_gain=float(srng.uniform(*(WEAK_GAIN if weak_audio[i] else STRONG_GAIN))),
                face_gain=float(srng.uniform(*(WEAK_GAIN if weak_face[i] else STRONG_GAIN))),
                level_mix=tuple(float(x) for x in mix),
            )
        )
    return out


def clip_counts(seed: int, n_subjects: int, n_clips: int) -> np.ndarray:
    """Clips per subject: at least MIN_CLIPS_PER_SUBJECT, the rest spread unevenly, summing to n_clips."""
    base = min(MIN_CLIPS_PER_SUBJECT, n_clips // max(n_subjects, 1))
    rng = _rng(seed, _SUBJECT, 10**6)
    weights = rng.gamma(2.0, size=n_subjects)
    return base + rng.multinomial(n_clips - base * n_subjects, weights / weights.sum())


def _rater_pools(seed: int) -> dict[str, np.ndarray]:
    rng = _rng(seed, _POOL)
    return {g: rng.normal(0, RATER_BIAS_SD, RATERS_PER_POOL) for g in contract.LABELLED_AGE_GROUPS}


def rate(age_group: str, latent: float, biases: np.ndarray, rng: np.random.Generator) -> tuple[float, ...]:
    """Three observers' scores on the 0-10 scale: NIPS 0-7 ×10/7 for neonates, integer NRS for adults."""
    noisy = latent + biases + rng.normal(0, RATER_SIGMA, biases.size)
    if age_group == "neonate":
        nips = np.clip(np.round(noisy * NIPS_MAX / contract.SCORE_MAX), 0, NIPS_MAX)
        return tuple(float(x) for x in nips * contract.SCORE_MAX / NIPS_MAX)
    return tuple(float(x) for x in np.clip(np.round(noisy), contract.SCORE_MIN, contract.SCORE_MAX))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def plan_clip(seed: int, index: int, subject: Subject, k: int, pools: dict[str, np.ndarray]) -> ClipPlan:
    rng = _rng(seed, _CLIP_PLAN, index)
    g = subject.age_group
    level = int(rng.choice(3, p=subject.level_mix))
    lo, hi = (0.0, *contract.LEVEL_UPPER_BOUNDS)[level], contract.LEVEL_UPPER_BOUNDS[level]
    pain = float(rng.uniform(lo, hi))
    shared = rng.normal(0, SHARED_AROUSAL_NOISE)
    e_a = float(np.clip(subject.audio_gain * pain / 10 + shared + rng.normal(0, AUDIO_AROUSAL_NOISE), 0, 1.2))
    e_f = float(np.clip(subject.face_gain * pain / 10 + shared + rng.normal(0, FACE_AROUSAL_NOISE), 0, 1.2))
    vocalizing = bool(rng.uniform() < _sigmoid((e_a - VOCAL_THRESHOLD) / VOCAL_SLOPE))
    frames = int(rng.integers(round(DURATION_S[0] * contract.FPS), round(DURATION_S[1] * contract.FPS) + 1))
    a_conf = tuple(c for c, p in AUDIO_CONFOUNDERS[g].items() if rng.uniform() < p)
    f_conf = tuple(c for c, p in FACE_CONFOUNDERS[g].items() if rng.uniform() < p)
    missing = rng.uniform()
    audio_missing = missing < MISSING_AUDIO_SHARE
    visual_missing = MISSING_AUDIO_SHARE <= missing < MISSING_AUDIO_SHARE + MISSING_VISUAL_SHARE
    occluded = bool(rng.uniform() < OCCLUDED_SHARE[g])
    mostly_missing = bool(rng.uniform() < FACE_MOSTLY_MISSING_SHARE)
    raters = rng.choice(RATERS_PER_POOL, size=3, replace=False)
    return ClipPlan(
        seed=seed,
        index=index,
        clip_id=f"{subject.subject_id}-C{k + 1:02d}",
        subject=subject,
        duration_s=frames / contract.FPS,
        latent_pain=pain,
        audio_arousal=e_a,
        face_arousal=e_f,
        vocalizing=vocalizing,
        sample_rate=int(rng.choice(SAMPLE_RATES)),
        snr_db=float(SNR_DB[0] + (SNR_DB[1] - SNR_DB[0]) * rng.beta(2.0, 1.5)),
        audio_confounders=a_conf,
        face_confounders=f_conf,
        occluded=occluded,
        face_mostly_missing=mostly_missing,
        short_dropouts=bool(rng.uniform() < SHORT_DROPOUT_SHARE),
        audio_missing=bool(audio_missing),
        visual_missing=bool(visual_missing),
        raters=rate(g, pain, pools[g][raters], rng),  # type: ignore[arg-type]
    )


def plan(
    seed: int, n_subjects: int = DEFAULT_SUBJECTS, n_clips: int | None = None, render: int | None = 0
) -> list[ClipPlan]:
    """The whole dataset's plan; n_clips defaults to the paper's clips-per-subject ratio."""
    if n_subjects < 1:
        raise ValueError("need at least one subject")
    if n_clips is None:
        n_clips = round(n_subjects * DEFAULT_CLIPS / DEFAULT_SUBJECTS)
    n_clips = max(n_clips, n_subjects)
    subjects = make_subjects(seed, n_subjects)
    counts = clip_counts(seed, n_subjects, n_clips)
    pools = _rater_pools(seed)
    plans, index = [], 0
    for subject, count in zip(subjects, counts, strict=True):
        for k in range(int(count)):
            plans.append(plan_clip(seed, index, subject, k, pools))
            index += 1
    for p in choose_renders(plans, render):
        p.render = True
    return plans


def choose_renders(plans: list[ClipPlan], n: int | None) -> list[ClipPlan]:
    """Clips to render as MP4. None: every clip delivered with a face (the default of `avpenet synth`:
    training data = what the service is sent). n: n clips with both modalities and the face visible
    throughout, spread over the pain range (small demo sets)."""
    if n is None:
        return [p for p in plans if not p.visual_missing]
    ok = [
        p for p in plans
        if not (p.audio_missing or p.visual_missing or p.occluded)
        and not (p.face_mostly_missing or p.short_dropouts)
    ]  # fmt: skip
    if n <= 0 or not ok:
        return []
    ok.sort(key=lambda p: (p.latent_pain, p.index))
    picks = np.unique(np.round(np.linspace(0, len(ok) - 1, min(n, len(ok)))).astype(int))
    return [ok[i] for i in picks]


# --- one clip's signals ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _subject_identity(
    seed: int, subject_index: int, age_group: str, faces: tuple[str, ...]
) -> tuple[vocal.Voice, face.Identity]:
    rng = _rng(seed, _IDENTITY, subject_index)
    neutral = _worker_neutral(sources.subject_source(seed, subject_index, faces))  # the mesh: any tone's
    return vocal.make_voice(age_group, rng), face.make_identity(age_group, neutral, rng)


def _episodes(pain: float, duration: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Distress episodes (start_s, end_s): more and longer with pain, near-continuous at high pain."""
    coverage = float(np.clip(0.15 + 0.85 * pain / 10 + rng.normal(0, 0.1), 0.1, 1.0))
    if pain < 1.5 and rng.uniform() < 0.5:
        return []
    k = int(rng.integers(1, 3))
    length = duration * coverage / k
    out = []
    for j in range(k):
        slot = duration / k
        start = j * slot + rng.uniform(0, max(0.0, slot - length))
        out.append((float(start), float(min(duration, start + length))))
    return out


def _audio(plan_: ClipPlan, voice: vocal.Voice, episodes, rng: np.random.Generator):
    """Mixed clip audio at the clip's file rate (float32 in [-1, 1]) and the voiced mask at SR."""
    n16 = round(plan_.duration_s * vocal.SR)
    if plan_.vocalizing:
        result = vocal.vocalize(voice, plan_.audio_arousal, episodes, n16, rng, vocal_share=0.9)
        if not result.voiced.any():  # every episode came out silent: voice the longest one
            longest = max(episodes or [(0.2, plan_.duration_s - 0.2)], key=lambda e: e[1] - e[0])
            result = vocal.vocalize(voice, plan_.audio_arousal, [longest], n16, rng)
    else:
        result = vocal.vocalize(voice, 0.3, [], n16, rng)
    mix = result.wave.copy()
    for conf in plan_.audio_confounders:
        if conf == "babble":
            mix += vocal.babble(n16, rng) * 10 ** (rng.uniform(-18, -4) / 20)
        else:
            mix += getattr(vocal, conf)(voice, n16, rng) * 10 ** (rng.uniform(-6, 2) / 20)
    sr = plan_.sample_rate
    if sr != vocal.SR:
        g = math.gcd(sr, vocal.SR)
        mix = signal.resample_poly(mix, sr // g, vocal.SR // g)
    n = round(plan_.duration_s * sr)
    mix = np.pad(mix[:n], (0, max(0, n - mix.size)))
    reference = result.active_rms if plan_.vocalizing else vocal.REFERENCE_RMS * 10 ** (-5 / 20)
    mixed = augment.mix_at_snr(mix, noise.hospital_noise(n, rng, sr), plan_.snr_db, reference_rms=reference)
    gain = 10 ** (rng.uniform(-32, -20) / 20) / vocal.REFERENCE_RMS  # recorder gain, no AGC
    mixed = mixed.astype(np.float64) * gain
    peak = float(np.max(np.abs(mixed))) if mixed.size else 0.0
    if peak > 0.99:  # the recorder's limiter
        mixed *= 0.99 / peak
    return mixed.astype(np.float32), result.voiced


def _voiced_frames(voiced: np.ndarray, n_frames: int) -> np.ndarray:
    per = vocal.SR // contract.FPS
    v = np.pad(voiced[: n_frames * per], (0, max(0, n_frames * per - voiced.size)))
    return v.reshape(n_frames, per).mean(axis=1)


def _face_dropouts(plan_: ClipPlan, n: int, rng: np.random.Generator) -> np.ndarray:
    lost = np.zeros(n, bool)
    if plan_.face_mostly_missing:
        length = int(np.ceil(n * rng.uniform(0.55, 1.0)))
        start = int(rng.integers(0, n - length + 1))
        lost[start : start + length] = True
    elif plan_.short_dropouts:
        for _ in range(int(rng.integers(1, 4))):
            length = int(rng.integers(2, 9))
            start = int(rng.integers(0, max(1, n - length)))
            lost[start : start + length] = True
    return lost


def _render(plan_: ClipPlan, out: Path, neutral, driven, expr, synthetic, wave):
    """Write the clip's MP4 (the mask and lost frames of its synthetic track painted in) and return what the
    real tracker reports for that MP4: the clip's .npz, so a privacy-mode upload of landmarks carries what a
    bedside device tracking this video would send."""
    from avpenet.features import tracker
    from avpenet.features.track import FaceTrack
    from avpenet.synth import render

    rng = _rng(plan_.seed, _RENDER, plan_.index)
    frames = render.render_frames(neutral, driven, expr.closure)
    if plan_.occluded:
        frames = render.cover_lower_face(frames, driven, rng)
    frames = render.cover_face(frames, driven, ~synthetic.face_present, rng)
    path = out / "video" / f"{plan_.clip_id}.mp4"
    render.write_mp4(path, frames, wave, plan_.sample_rate)
    seen = tracker.track_video(path.read_bytes())  # (not named `tracked`: that is the stamp module)
    return seen if seen is not None else FaceTrack.empty(plan_.n_frames, frames.shape[2:0:-1])


def make_clip(plan_: ClipPlan, out_dir: str) -> dict:
    """Synthesise and write one clip's files; returns its truth row."""
    rng = _rng(plan_.seed, _CLIP_SIGNAL, plan_.index)
    subject = plan_.subject
    voice, identity = _subject_identity(plan_.seed, subject.index, subject.age_group, plan_.faces)
    episodes = _episodes(plan_.latent_pain, plan_.duration_s, rng)
    wave, voiced = _audio(plan_, voice, episodes, rng)
    out = Path(out_dir)
    if not plan_.audio_missing:
        sf.write(out / "audio" / f"{plan_.clip_id}.wav", wave, plan_.sample_rate, subtype="PCM_16")
    n = plan_.n_frames
    neutral = _worker_neutral(
        sources.subject_source(plan_.seed, subject.index, plan_.faces),
        skin.subject_tone(plan_.seed, subject.index, plan_.skin_tones),
    )
    expr = face.expression(
        identity, subject.age_group, plan_.face_arousal, episodes, _voiced_frames(voiced, n),
        plan_.face_confounders, n, rng, pose_scale=0.5 if plan_.render else 1.0,
    )  # fmt: skip
    camera = face.random_camera(rng)
    if plan_.render:  # the video animates the subject's source photo in its own frame, with the subject's
        camera = face.render_camera(neutral)  # face shape (neonate proportions included)
    track = face.synth_track(identity, expr, neutral, camera, rng)
    if plan_.occluded:
        track = augment.occlude_lower_face(track, rng)
    track = augment.drop_frames(track, _face_dropouts(plan_, n, rng) & track.face_present)
    if plan_.render:
        track = _render(plan_, out, neutral, face.driven_points(identity, expr, camera), expr, track, wave)
    if not plan_.visual_missing:
        npz = out / "visual" / f"{plan_.clip_id}.npz"
        track.save_npz(npz)
        if plan_.render:  # the .npz is this MP4's tracking: stamp it so `avpenet features` does not redo it
            tracked.write_tracking_stamp((out / "video" / f"{plan_.clip_id}.mp4").read_bytes(), npz)
    confounders = plan_.audio_confounders + plan_.face_confounders
    return {
        "voiced_fraction": round(float(voiced.mean()), 4),
        "face_missing_fraction": round(float(1 - track.face_present.mean()), 4),
        "confounder": "+".join(confounders) if confounders else "none",
    }


# --- worker state -------------------------------------------------------------------------------------------
_NEUTRAL_STATE: dict | None = None


def _init_worker(neutral_states: dict) -> None:
    """Hand the neutral source faces to a worker so mediapipe runs once per dataset, not once per process."""
    global _NEUTRAL_STATE
    _NEUTRAL_STATE = neutral_states
    _subject_identity.cache_clear()
    _worker_neutral.cache_clear()


@functools.lru_cache(maxsize=(len(skin.MONK_SWATCHES) + 1) * len(sources.SOURCES))  # every face at every tone
def _worker_neutral(name: str, skin_tone: int | None = None) -> face.NeutralFace:
    if _NEUTRAL_STATE is None or (name, skin_tone) not in _NEUTRAL_STATE:  # made outside generate()'s workers
        return sources.toned(sources.neutral_face(name), skin_tone)
    return face.neutral_from_arrays(_NEUTRAL_STATE[name, skin_tone])


def _work(args: tuple[ClipPlan, str]) -> dict:
    return make_clip(*args)


# --- the whole dataset --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    n_subjects: int
    n_clips: int
    n_rendered: int
    out_dir: str


def generate(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    n_subjects: int = DEFAULT_SUBJECTS,
    n_clips: int | None = None,
    render: int | None = 0,
    workers: int = 2,
    progress: bool = True,
    subjects: Sequence[str] | set[str] | None = None,
    resume: bool = False,
    faces: tuple[str, ...] = sources.DEFAULT_FACES,
    skin_tones: tuple[int | None, ...] = (None,),
) -> Summary:
    """Write labels.csv, truth.csv, plan.json, audio/, visual/ and video/ under out_dir (only the clips of
    `subjects` when given: the same files as in the whole set, e.g. one split's subjects rendered on a
    budget; plan.json names the whole set's plan, so any of its parts is recognised as that set's subjects).

    `subjects` as a list or tuple is also the order the clips are made in (subject by subject). With
    `resume`, clips a previous run of the same options finished (DIR/.progress/, avpenet.synth.progress) are
    not made again. `faces`: the source photos subjects' faces are drawn from (sources.subject_source); a set
    records them unless they are sources.TWO_FACES, so the sets made before faces were recorded (with those
    two) read and resume as before, and a resume of one with other faces is refused. `skin_tones`: the Monk
    Skin Tones each subject's face is recoloured to, one drawn per subject (avpenet.synth.skin; None: as
    photographed, the default and all a set recording none holds)."""
    faces = sources.check_faces(faces)
    skin_tones = skin.check_tones(skin_tones)  # ValueError for a tone off the scale, before anything is made
    out = Path(out_dir)
    for sub in ("audio", "visual", "video"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plans = plan(seed, n_subjects, n_clips, render)
    for p in plans:
        p.faces, p.skin_tones = faces, skin_tones
    # any set of this plan, whichever parts, is recognised as holding these subjects (data.checkpoint_split)
    recorded = {"generator": GENERATOR, "seed": seed, "n_subjects": n_subjects, "n_clips": len(plans),
                "render": RENDER_ALL if render is None else render}  # fmt: skip
    if subjects is not None:
        chosen = set(subjects)
        unknown = sorted(chosen - {p.subject.subject_id for p in plans})
        if unknown:
            raise ValueError(f"subjects not in this set (seed {seed}, {n_subjects} subjects): {unknown}")
        plans = [p for p in plans if p.subject.subject_id in chosen]
    params = {"seed": seed, "n_subjects": n_subjects, "n_clips": n_clips, "render": render}
    if faces != sources.TWO_FACES:  # the same subjects with other faces: a resume must keep them
        recorded["faces"] = params["faces"] = list(faces)
    if skin_tones != (None,):  # another colour of the same subjects' faces: a resume must keep it
        recorded["skin_tones"] = params["skin_tones"] = list(skin_tones)
    done = synth_progress.start(out, params, resume)
    todo = [i for i, p in enumerate(plans) if p.clip_id not in done]
    for p in plans:
        p.truth = done.get(p.clip_id, p.truth)
    if isinstance(subjects, list | tuple):  # subject by subject, in the order given
        rank = {s: k for k, s in enumerate(subjects)}
        todo.sort(key=lambda i: (rank[plans[i].subject.subject_id], plans[i].index))
    else:  # rendered clips are slow: start them first so they do not trail at the end
        todo.sort(key=lambda i: not plans[i].render)
    _make_clips(plans, todo, out, workers, progress, faces, skin_tones)
    write_labels(out / "labels.csv", plans)
    write_truth(out / "truth.csv", plans)
    data.write_plan(out, recorded)
    n_subjects = len({p.subject.subject_id for p in plans})
    return Summary(n_subjects, len(plans), sum(p.render for p in plans), str(out))


def _make_clips(
    plans: list[ClipPlan],
    todo: list[int],
    out: Path,
    workers: int,
    progress: bool,
    faces: tuple[str, ...],
    skin_tones: tuple[int | None, ...],
) -> None:
    """Make plans[i] for i in `todo`, in that order; each clip's truth recorded as soon as it is written."""
    from tqdm import tqdm

    state = sources.neutral_states(faces, skin_tones)
    jobs = [(plans[i], str(out)) for i in todo]
    bar = tqdm(total=len(jobs), desc=GENERATOR, unit="clip", disable=not progress)
    if workers <= 1:
        _init_worker(state)
        results = map(_work, jobs)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # workers track their renders: mediapipe is not fork-safe
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(state,))
        results = pool.map(_work, jobs, chunksize=1 if len(jobs) < 8 * workers else 4)
    try:
        for i, truth in zip(todo, results, strict=True):
            plans[i].truth = truth
            synth_progress.record(out, plans[i].clip_id, truth)
            bar.update()
    finally:
        if workers > 1:
            pool.shutdown(cancel_futures=True)
        bar.close()


def _fmt(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def label_row(p: ClipPlan) -> dict[str, str]:
    score = p.score
    row = {
        "clip_id": p.clip_id,
        "subject_id": p.subject.subject_id,
        "age_group": p.subject.age_group,
        "audio": "" if p.audio_missing else f"audio/{p.clip_id}.wav",
        "visual": "" if p.visual_missing else f"visual/{p.clip_id}.npz",
        "video": f"video/{p.clip_id}.mp4" if p.render else "",
        "duration_s": f"{p.duration_s:.1f}",
        "score": _fmt(score),
        "rater_1": _fmt(p.raters[0]),
        "rater_2": _fmt(p.raters[1]),
        "rater_3": _fmt(p.raters[2]),
        "level": contract.level_of(score),
    }
    assert tuple(row) == contract.LABEL_COLUMNS
    return row


def labels_text(plans: list[ClipPlan]) -> str:
    fh = io.StringIO(newline="")
    writer = csv.DictWriter(fh, fieldnames=contract.LABEL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in plans:
        writer.writerow(label_row(p))
    return fh.getvalue()


def write_labels(path: Path, plans: list[ClipPlan]) -> None:
    replace_bytes(Path(path), labels_text(plans).encode())  # half a labels.csv could read as fewer clips


def truth_row(p: ClipPlan) -> dict[str, str]:
    t = p.truth
    row = {
        "clip_id": p.clip_id,
        "subject_id": p.subject.subject_id,
        "age_group": p.subject.age_group,
        "latent_pain": f"{p.latent_pain:.4f}",
        "audio_arousal": f"{p.audio_arousal:.4f}",
        "face_arousal": f"{p.face_arousal:.4f}",
        "vocalizing": str(int(p.vocalizing)),
        "voiced_fraction": str(t.get("voiced_fraction", "")),
        "confounder": t.get("confounder", ""),
        "snr_db": f"{p.snr_db:.2f}",
        "sample_rate": str(p.sample_rate),
        "face_missing_fraction": str(t.get("face_missing_fraction", "")),
        "lower_face_occluded": str(int(p.occluded)),
        "weak_audio": str(int(p.subject.weak_audio)),
        "weak_face": str(int(p.subject.weak_face)),
        "audio_missing": str(int(p.audio_missing)),
        "visual_missing": str(int(p.visual_missing)),
        "rendered": str(int(p.render)),
    }
    assert tuple(row) == TRUTH_COLUMNS
    return row


def write_truth(path: Path, plans: list[ClipPlan]) -> None:
    fh = io.StringIO(newline="")
    writer = csv.DictWriter(fh, fieldnames=TRUTH_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in plans:
        writer.writerow(truth_row(p))
    replace_text(Path(path), fh.getvalue())


def summary_dict(s: Summary) -> dict:
    return asdict(s)


def recorded_render(recorded: dict) -> int | None:
    """A plan.json's render choice as `plan` takes it: "all" (null in sets made before it was written) is
    None, else the count."""
    value = recorded.get("render")
    return None if value in (None, RENDER_ALL) else int(value)


def subject_skin_tones(recorded: dict | None, subject_ids: Sequence[str]) -> dict[str, str] | None:
    """Each subject's skin as its set was rendered, named as `--skin-tone` names it (`skin.tone_name`), from
    the set's plan.json (`data.read_plan`); None for a set made without --skin-tone, or not by `avpenet
    synth`. How an evaluation reports a set by the skin its subjects wear."""
    if not recorded or recorded.get("generator") != GENERATOR or not recorded.get("skin_tones"):
        return None
    seed, tones = int(recorded["seed"]), tuple(recorded["skin_tones"])  # in the order the render drew from
    index = {s.subject_id: s.index for s in make_subjects(seed, int(recorded["n_subjects"]))}
    unknown = sorted(set(subject_ids) - set(index))
    if unknown:
        raise ValueError(f"subjects {', '.join(unknown[:3])} are not in the set's plan.json")
    drawn = {sid: skin.subject_tone(seed, index[sid], tones) for sid in subject_ids}
    return {sid: skin.tone_name(t) for sid, t in drawn.items()}


def full_labels_digest(recorded: dict) -> str:
    """sha256 of the labels.csv a whole render of a recorded plan (DIR/plan.json) writes: how a checkpoint
    trained before plan.json existed, which recorded only that digest, is matched to a part of its data."""
    return _labels_digest(
        recorded["seed"], recorded["n_subjects"], recorded["n_clips"], recorded_render(recorded)
    )


@functools.lru_cache(maxsize=8)
def _labels_digest(seed: int, n_subjects: int, n_clips: int, render: int | None) -> str:
    """Cached: planning the default set takes ~2.5 s, and one command may compare a plan more than once."""
    return hashlib.sha256(labels_text(plan(seed, n_subjects, n_clips, render)).encode()).hexdigest()
