"""Visual features (alignment, AU proxies, head pose, mask) and the per-window ensemble inputs."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from avpenet import contract
from avpenet.errors import NothingToScore
from avpenet.features import visual, windows
from avpenet.features.track import FaceTrack
from avpenet.features.tracker import detect_image

LM = contract.feature_slice("landmarks_xy")
AU = contract.feature_slice("au_proxies")
POSE = contract.feature_slice("head_pose")


@pytest.fixture(scope="module")
def face() -> FaceTrack:
    return detect_image(data.astronaut())


def _repeat(track: FaceTrack, n: int) -> FaceTrack:
    """n copies of a tracked frame with sub-pixel tracker jitter (an exactly still track is unusable)."""
    out = FaceTrack.concat([track] * n)
    out.landmarks += np.random.default_rng(n).normal(0, 1e-5, out.landmarks.shape).astype(np.float32)
    return out


def _transform(track: FaceTrack, angle: float, scale: float, shift: tuple[float, float]) -> FaceTrack:
    """Rotate/scale/shift the landmarks in pixel space (an in-plane head roll + a camera move)."""
    out = FaceTrack.concat([track])
    size = track.image_size.astype(np.float64)
    p = out.landmarks[..., :2] * size
    c = p.mean(axis=1, keepdims=True)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    p = (p - c) @ rot.T * scale + c + np.array(shift)
    out.landmarks[..., :2] = (p / size).astype(np.float32)
    return out


def _y_shift(track: FaceTrack, idx, dy_iod: float) -> FaceTrack:
    """Move landmark points down (image y) by dy_iod inter-ocular distances."""
    out = FaceTrack.concat([track])
    size = track.image_size.astype(np.float64)
    p = out.landmarks[0, :, :2] * size
    iod = np.linalg.norm(p[[362, 263]].mean(0) - p[[33, 133]].mean(0))
    out.landmarks[0, list(idx), 1] += np.float32(dy_iod * iod / size[1])
    return out


def test_layout_and_dtypes(face):
    feats, mask = visual.frame_features(_repeat(face, 4))
    assert feats.shape == (4, contract.VISUAL_FEATURE_DIM) and feats.dtype == np.float32
    assert mask.shape == (4,) and mask.dtype == np.float32 and mask.tolist() == [1, 1, 1, 1]
    assert np.all(np.isfinite(feats)) and np.abs(feats).max() < 3  # O(1) values
    blend = feats[0, contract.feature_slice("blendshapes")]
    np.testing.assert_allclose(blend, face.blendshapes[0], atol=1e-6)


def test_alignment_removes_translation_scale_and_roll(face):
    feats, _ = visual.frame_features(face)
    moved = _transform(face, angle=np.deg2rad(20), scale=0.6, shift=(-40.0, 25.0))
    moved_feats, mask = visual.frame_features(moved)
    assert mask[0] == 1
    assert np.abs(moved_feats[0, LM] - feats[0, LM]).max() < 1e-3
    # The landmarks themselves moved a lot; the template is the astronaut, so the aligned shape is ~template.
    assert np.abs(moved.landmarks - face.landmarks).max() > 0.05
    tmpl = visual.template()[list(contract.LANDMARK_SUBSET)].reshape(-1)
    assert np.abs(feats[0, LM] - tmpl).max() < 0.02


def test_geometric_au_proxies_respond(face):
    base = visual.frame_features(face)[0][0, AU]
    names = list(contract.AU_NAMES)
    # AU43: upper lids down onto the lower lids.
    closed = _y_shift(face, visual.RIGHT_UPPER_LID + visual.LEFT_UPPER_LID + (160, 158, 387, 385), 0.09)
    au = visual.frame_features(closed)[0][0, AU]
    assert base[names.index("AU43")] < 0.05 and au[names.index("AU43")] > 0.5
    # AU6: cheeks up by 5 % IOD; AU9: nose wings up by 5 % IOD. Other AUs unchanged.
    cheeks = visual.frame_features(_y_shift(face, visual.RIGHT_CHEEK + visual.LEFT_CHEEK, -0.05))[0][0, AU]
    assert cheeks[names.index("AU6")] - base[names.index("AU6")] == pytest.approx(1.0, abs=0.15)
    wings = visual.RIGHT_NOSE_WING + visual.LEFT_NOSE_WING
    nose = visual.frame_features(_y_shift(face, wings, -0.05))[0][0, AU]
    assert nose[names.index("AU9")] - base[names.index("AU9")] == pytest.approx(1.0, abs=0.15)
    assert abs(nose[names.index("AU6")] - base[names.index("AU6")]) < 0.05


def test_geometric_aus_ignore_head_pitch_and_yaw(face):
    base = visual.frame_features(face)[0][0, AU]
    size = np.array([*face.image_size, face.image_size[0]], np.float64)
    p = face.landmarks[0].astype(np.float64) * size
    c = p.mean(0)
    for a, b in ((0.35, 0.0), (0.0, 0.35)):  # pitch, yaw (radians)
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        turned = FaceTrack.concat([face])
        turned.landmarks[0] = (((p - c) @ (rx @ ry).T + c) / size).astype(np.float32)
        au = visual.frame_features(turned)[0][0, AU]
        assert np.abs(au - base).max() < 0.15, (a, b, au - base)


def test_head_pose_angles():
    yaw, pitch, roll = 0.3, -0.2, 0.1
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx * 1.5  # a scaled transform still gives the angles
    out = visual.head_pose_angles(np.stack([m, np.zeros((4, 4))]))
    np.testing.assert_allclose(out[0], [yaw, pitch, roll], atol=1e-9)
    assert not out[1].any()


def test_astronaut_pose_is_plausible(face):
    pose = visual.frame_features(face)[0][0, POSE]
    assert np.all(np.abs(pose) < np.deg2rad(30))


def test_unusable_frames_are_masked_and_zero(face):
    empty = FaceTrack.empty(1, tuple(face.image_size))
    off_frame = _transform(face, 0.0, 1.0, (900.0, 0.0))  # face pushed out of the image
    tiny = _transform(face, 0.0, 0.02, (0.0, 0.0))  # IOD of ~2 px
    broken = FaceTrack.concat([face])  # a tracker failure: the points scrambled
    broken.landmarks[0] = broken.landmarks[0, np.random.default_rng(0).permutation(contract.N_LANDMARKS)]
    track = FaceTrack.concat([face, empty, off_frame, tiny, broken])
    feats, mask = visual.frame_features(track)
    assert mask.tolist() == [1, 0, 0, 0, 0]
    assert feats[0].any() and not feats[1:].any()


def test_nan_safe_and_empty():
    feats, mask = visual.frame_features(FaceTrack.empty(0))
    assert feats.shape == (0, contract.VISUAL_FEATURE_DIM) and mask.shape == (0,)
    feats, mask = visual.frame_features(FaceTrack.empty(3))
    assert not mask.any() and np.all(np.isfinite(feats))


# --- windows -----------------------------------------------------------------------------------------------
def _check_contract(inputs: dict[str, np.ndarray], n: int, specs=contract.MODEL_INPUTS) -> None:
    assert set(inputs) == {spec.name for spec in specs}
    for spec in specs:
        assert inputs[spec.name].shape == contract.batch_shape(spec, n), spec.name
        assert inputs[spec.name].dtype == spec.numpy_dtype, spec.name
        assert np.all(np.isfinite(inputs[spec.name])), spec.name


def test_model_inputs_align_audio_and_video(face):
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.05, int(4.5 * contract.SAMPLE_RATE)).astype(np.float32)  # 3 windows
    track = _repeat(face, 35)  # 3.5 s → 2 windows
    inputs = windows.model_inputs(wave, track, "neonate")
    _check_contract(inputs, 3)
    mask = inputs[contract.FRAME_MASK.name]
    assert mask[0].all() and mask[1, :25].all() and not mask[1, 25:].any()
    assert mask[2, :15].all() and not mask[2, 15:].any()  # window 2 = frames [20, 50): 15 real frames
    assert inputs[contract.AUDIO_PRESENT.name][:, 0].tolist() == [1, 1, 1]
    assert inputs[contract.AGE_GROUP.name][:, 0].tolist() == [contract.age_index("neonate")] * 3
    feats, _ = visual.frame_features(track)
    vis = inputs[contract.VISUAL_FEATURES.name]
    np.testing.assert_array_equal(vis[1, :25], feats[10:35])  # window 1 = frames [10, 40)
    np.testing.assert_array_equal(windows.window_starts_s(3), [0.0, 1.0, 2.0])

    served = windows.model_inputs(wave, track, "neonate", served=True)  # what the gateway sends Triton
    _check_contract(served, 3, contract.ENSEMBLE.inputs)
    clip_samples = 2 * contract.HOP_SAMPLES + contract.WINDOW_SAMPLES  # 3 windows cover 5 s
    assert 0 <= served[contract.AUDIO.name].size - clip_samples < 3  # each sample once, padding under a row
    again = windows.model_inputs_of(served)  # the same windows, bit for bit
    assert set(again) == set(inputs)
    for name, value in inputs.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)


def test_a_window_holding_only_a_sliver_of_sound_is_not_a_window_of_sound(face):
    """The face runs to 5.5 s, the sound ends at 3.02 s: window 3 (from 3.0 s) held 0.02 s of audio and was
    marked present, normalised from those samples alone (0.9 points off on the example clip)."""
    rng = np.random.default_rng(0)
    for seconds, heard in ((3.02, [1, 1, 1, 0]), (3.12, [1, 1, 1, 1])):  # 0.12 s: more than the 0.1 s tail
        wave = rng.normal(0, 0.05, int(seconds * contract.SAMPLE_RATE)).astype(np.float32)
        inputs = windows.model_inputs(wave, _repeat(face, 55), "adult")
        assert inputs[contract.AUDIO_PRESENT.name][:, 0].tolist() == heard, seconds


def test_audio_only_video_only_and_nothing(face):
    audio_only = windows.model_inputs(np.full(contract.SAMPLE_RATE * 2, 0.1, np.float32), None, "adult")
    _check_contract(audio_only, 1)
    assert not audio_only[contract.FRAME_MASK.name].any()
    assert not audio_only[contract.VISUAL_FEATURES.name].any()

    no_face = windows.model_inputs(None, FaceTrack.empty(50), "unknown")
    _check_contract(no_face, 3)
    assert not no_face[contract.AUDIO_PRESENT.name].any() and not no_face[contract.WAVEFORM.name].any()
    assert not no_face[contract.FRAME_MASK.name].any()
    with pytest.raises(NothingToScore):
        windows.model_inputs(None, FaceTrack.empty(50), "adult", require_signal=True)
    with pytest.raises(NothingToScore):
        windows.model_inputs(np.zeros(0, np.float32), None, "adult", require_signal=True)

    silent = windows.model_inputs(np.zeros(contract.WINDOW_SAMPLES, np.float32), None, 0)
    _check_contract(silent, 1)  # silence alone is scored from the audio
    assert silent[contract.AUDIO_PRESENT.name][0, 0] == 1 and not silent[contract.WAVEFORM.name].any()
    with_face = windows.model_inputs(np.zeros(contract.WINDOW_SAMPLES, np.float32), _repeat(face, 30), 0)
    assert with_face[contract.AUDIO_PRESENT.name][0, 0] == 0  # with a face, from the face (silent_windows)
    with pytest.raises(ValueError):
        windows.model_inputs(None, face, "toddler")


# --- usability: one check for tracked and uploaded tracks ------------------------------------------------
def _degenerate(face: FaceTrack, landmarks: np.ndarray, image_size=None) -> FaceTrack:
    track = _repeat(face, 40)
    track.landmarks = np.broadcast_to(landmarks, track.landmarks.shape).astype(np.float32).copy()
    if image_size is not None:
        track.image_size = np.asarray(image_size, np.int32)
    return track


@pytest.mark.parametrize("value", [0.0, 0.5, 9.99])
def test_constant_landmarks_have_no_usable_frame(face, value):
    track = _degenerate(face, np.full((contract.N_LANDMARKS, 3), value))
    assert track.face_present.all()
    assert not visual.usable_frames(track).any()
    _, mask = visual.frame_features(track)
    assert not mask.any()


def test_collapsed_face_without_image_size_is_unusable(face):
    base = _repeat(face, 40)
    tiny = 0.5 + (base.landmarks - 0.5) * 1e-3  # the same face, a thousandth of its size
    track = _degenerate(face, tiny, image_size=(0, 0))
    assert not visual.usable_frames(track).any()
    base.image_size = np.zeros(2, np.int32)
    assert visual.usable_frames(base).all()  # a normal-sized face needs no image size


def test_frozen_track_is_unusable_but_a_short_still_is_not(face):
    frozen = FaceTrack.concat([face] * visual.FROZEN_MIN_FRAMES)
    assert not visual.usable_frames(frozen).any()
    short = FaceTrack.concat([face] * (visual.FROZEN_MIN_FRAMES - 1))
    assert visual.usable_frames(short).all()
    assert visual.usable_frames(_repeat(face, 40)).all()  # tracker jitter: usable


def test_a_still_run_masks_its_copies_and_keeps_the_last_tracked_frame(face):
    """A device repeating its last landmarks mid-track: the repeats are unusable, the frame they copy (the
    last position tracked) is not; after a frame without a face nothing shows it was tracked."""
    track = _repeat(face, 60)
    track.landmarks[10:40] = track.landmarks[10]
    usable = visual.usable_frames(track)
    assert usable[:11].all() and not usable[11:40].any() and usable[40:].all()
    track.face_present[9] = False
    assert not visual.usable_frames(track)[10:40].any()
    moving = track.landmarks[10 + visual.FROZEN_MIN_FRAMES - 1 : 40]
    moving += np.random.default_rng(1).normal(0, 1e-5, moving.shape).astype(np.float32)
    assert visual.usable_frames(track)[10:40].all()  # a still run one frame too short, then a moving face


def test_unsettled_counts_the_last_frames_later_ones_can_still_mask(face):
    track = _repeat(face, 20)
    assert visual.unsettled(track) == 0  # a moving face is decided at once
    track.landmarks[15:] = track.landmarks[15]
    assert visual.unsettled(track) == 4  # the copies of frame 15 (frame 15 stays usable in any case)
    track.landmarks[20 - visual.FROZEN_MIN_FRAMES :] = track.landmarks[20 - visual.FROZEN_MIN_FRAMES]
    assert visual.unsettled(track) == 0  # the run is long enough: frozen, whatever follows
    assert visual.unsettled(FaceTrack.concat([face] * 3)) == 3  # a first face: no frame before shows it moved
    assert visual.unsettled(FaceTrack.concat([track, FaceTrack.empty(1, (512, 512))])) == 0


def test_a_request_over_the_batch_bound_splits_into_requests_of_its_own_windows():
    """The gateway sends a clip longer than MAX_BATCH_SIZE windows in several calls: each call's AUDIO is
    re-laid over its own rows and still stands for exactly its windows."""
    rng = np.random.default_rng(3)
    wave = rng.normal(0, 0.05, 75 * contract.SAMPLE_RATE).astype(np.float32)  # 73 windows
    whole = windows.model_inputs(wave, None, "adult", served=True)
    n = len(whole[contract.AUDIO_PRESENT.name])
    expected = windows.model_inputs(wave, None, "adult")
    for start, stop in ((0, contract.MAX_BATCH_SIZE), (contract.MAX_BATCH_SIZE, n)):
        part = windows.split_rows(whole, start, stop)
        _check_contract(part, stop - start, contract.ENSEMBLE.inputs)
        for name, value in windows.model_inputs_of(part).items():
            np.testing.assert_array_equal(value, expected[name][start:stop], err_msg=name)
