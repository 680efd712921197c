"""The canonical face frame the visual features are expressed in, and the alignments onto it.

The template is the neutral face the real FaceLandmarker reports on `skimage.data.astronaut()`
(``canonical_face.npy``, rebuilt by ``python -m avpenet.features.faceframe``), with its origin between the
eyes, x along the eye line (toward the subject's left eye, i.e. image right), y down and unit = inter-ocular
distance (IOD). `align` maps a frame's landmarks onto it by the least-squares similarity on STABLE_POINTS
(position, scale and roll removed); `align3d` by the rigid 3-D transform plus scale on RIGID_POINTS (yaw and
pitch removed too, for the AU geometry); `head_pose_angles` reads the tracker's own head pose. The ``_at``
forms take the fitting points and the points to move separately, so a caller can gather only the landmarks
it reads; each moved point is computed exactly as by the full forms.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

TEMPLATE_PATH = Path(__file__).with_name("canonical_face.npy")

# mediapipe face-mesh indices (the subject's right eye is on the image left).
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 33, 133, 362, 263
STABLE_POINTS = (RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER, 168, 6, 197)
# Points that move little with expression, spread in depth: eye corners, nose bridge, face sides, forehead.
RIGID_POINTS = (*STABLE_POINTS, 234, 454, 10, 151)
STABLE_INDEX = np.asarray(STABLE_POINTS)
RIGID_INDEX = np.asarray(RIGID_POINTS)


def canonical_frame(points_px: np.ndarray) -> np.ndarray:
    """Express one face's landmarks [478, 2] (pixels) with origin between the eyes, x along the eye line and
    unit = inter-ocular distance — the frame the template is stored in."""
    right = points_px[[RIGHT_EYE_OUTER, RIGHT_EYE_INNER]].mean(0)
    left = points_px[[LEFT_EYE_INNER, LEFT_EYE_OUTER]].mean(0)
    axis = left - right
    iod = float(np.hypot(*axis))
    c, s = axis / iod
    rot = np.array([[c, s], [-s, c]])  # rotates the eye axis onto +x
    return ((points_px - (left + right) / 2) @ rot.T) / iod


def build_template() -> np.ndarray:
    """Run the real FaceLandmarker on skimage's astronaut photo → canonical landmarks [478, 2] float32."""
    from skimage import data

    from avpenet.features.tracker import detect_image

    image = data.astronaut()
    track = detect_image(image)
    if not track.face_present[0]:
        raise RuntimeError("FaceLandmarker found no face on the astronaut photo")
    h, w = image.shape[:2]
    px = track.landmarks[0].astype(np.float64) * np.array([w, h, w])  # mediapipe z is in units of width
    xy = canonical_frame(px[:, :2])
    left = px[[LEFT_EYE_INNER, LEFT_EYE_OUTER], :2].mean(0)
    iod = np.linalg.norm(left - px[[RIGHT_EYE_OUTER, RIGHT_EYE_INNER], :2].mean(0))
    z = (px[:, 2] - px[:, 2].mean()) / iod
    return np.concatenate([xy, z[:, None]], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=1)
def template3d() -> np.ndarray:
    """The canonical template [478, 3] (IOD units; z = mediapipe depth), from the committed asset."""
    return np.load(TEMPLATE_PATH, allow_pickle=False).astype(np.float64)


def template() -> np.ndarray:
    """The 2-D canonical template [478, 2]: what landmarks_xy are aligned to."""
    return template3d()[:, :2]


def align3d(points: np.ndarray) -> np.ndarray:
    """Rigid + scale alignment of landmarks [T, 478, 3] (pixels, z in pixels) to the 3-D template on
    RIGID_POINTS (Umeyama): removes yaw and pitch too, so AU geometry is measured on a frontal face."""
    return align3d_at(points[:, RIGID_INDEX], points)


def align3d_at(src: np.ndarray, turned: np.ndarray) -> np.ndarray:
    """align3d fitted on the RIGID_POINTS `src` [T, len(RIGID_POINTS), 3], applied to `turned` [T, K, 3]:
    each turned point exactly as by align3d (turning all 478 points of a 600-frame track is ~20x the work
    of the ~25 the AU geometry reads)."""
    dst = template3d()[RIGID_INDEX]
    mu_s, mu_d = src.mean(1, keepdims=True), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = np.einsum("nd,tne->tde", dc, sc) / len(RIGID_POINTS)  # [T, 3, 3]
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((src.shape[0], 3))
    fix[:, 2] = d
    rot = u @ (fix[:, :, None] * vt)
    var = np.maximum(np.sum(sc**2, axis=(1, 2)) / len(RIGID_POINTS), 1e-12)
    scale = np.sum(sig * fix, axis=1) / var
    return scale[:, None, None] * np.einsum("tde,tne->tnd", rot, turned - mu_s) + mu_d


def align(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarity-align landmarks [T, 478, 2] (pixels) to the template on STABLE_POINTS.

    Returns the aligned landmarks [T, 478, 2] in template units and each frame's scale (pixels per IOD).
    2-D similarity in complex form: z ↦ a·(z − mean z) + mean q with a = Σ conj(z̃)·q̃ / Σ |z̃|².
    """
    return align_at(points[:, STABLE_INDEX], points)


def align_at(stable: np.ndarray, turned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """align fitted on the STABLE_POINTS `stable` [T, 7, 2], applied to `turned` [T, K, 2] (each turned point
    exactly as by align)."""
    q = template()[STABLE_INDEX]
    q = q[:, 0] + 1j * q[:, 1]
    zs = stable[..., 0] + 1j * stable[..., 1]
    z = turned[..., 0] + 1j * turned[..., 1]
    z_mean = zs.mean(1, keepdims=True)
    zc, qc = zs - z_mean, q - q.mean()
    denom = np.sum(np.abs(zc) ** 2, axis=1, keepdims=True)
    a = np.sum(np.conj(zc) * qc[None], axis=1, keepdims=True) / np.maximum(denom, 1e-12)
    aligned = a * (z - z_mean) + q.mean()
    scale = 1.0 / np.maximum(np.abs(a[:, 0]), 1e-12)
    return np.stack([aligned.real, aligned.imag], axis=-1), scale


def head_pose_angles(matrices: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) radians [T, 3] from 4×4 facial transforms [T, 4, 4]; zeros for all-zero matrices."""
    r = np.asarray(matrices, np.float64)[:, :3, :3]
    norms = np.linalg.norm(r, axis=1, keepdims=True)  # column norms: remove any scale in the transform
    r = r / np.where(norms > 1e-9, norms, 1.0)
    yaw = np.arcsin(np.clip(-r[:, 2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[:, 2, 1], r[:, 2, 2])
    roll = np.arctan2(r[:, 1, 0], r[:, 0, 0])
    out = np.stack([yaw, pitch, roll], axis=1)
    out[np.all(norms[:, 0] < 1e-9, axis=1)] = 0.0
    return out


if __name__ == "__main__":  # python -m avpenet.features.faceframe: rebuild the committed template
    np.save(TEMPLATE_PATH, build_template())
    print(f"wrote {TEMPLATE_PATH}")
