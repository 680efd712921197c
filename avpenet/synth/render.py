"""Render a synthetic clip as a real MP4: the astronaut photo animated by the clip's driven landmark motion.

Why our own warp: a piecewise-affine warp over a Delaunay triangulation of the 468 mesh points plus a
head ring and frame-border anchors, done as ONE cv2.remap per frame (triangle ids rasterised with OpenCV,
per-triangle inverse affines applied with numpy), costs milliseconds; skimage's PiecewiseAffineTransform
takes 1-8.5 s per frame. Frames are supersampled 2× to avoid jagged lid lines; closing eyes
blend in a copy of the photo whose eye openings are inpainted with skin, so no white sclera sliver shows.

Encoding uses PyAV's bundled FFmpeg: H.264 (libx264, yuv420p) at contract.FPS plus the clip's audio as AAC.
"""

from __future__ import annotations

import functools
import os
from fractions import Fraction

import numpy as np

from avpenet import contract
from avpenet.synth import face

SUPERSAMPLE = 2
# The inner lip contour (mediapipe ids): the opening between the lips is painted as a dark mouth cavity, since
# a warp only stretches lip skin there (or teeth) and the tracker would read that as a closed mouth.
INNER_MOUTH = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
CAVITY_RGB = (48, 18, 22)
LASH_RGB = (40, 30, 28)
RING_POINTS = 20
RING_SCALE = 1.45  # head ring radius relative to the face outline: hair and neck move with the head


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares 2-D similarity (scale, rotation, translation) mapping src points onto dst (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, d]) @ vt
    scale = float((sig * np.array([1.0, d])).sum() / a.var(0).sum())
    return scale, rot, mu_d - scale * rot @ mu_s


class Renderer:
    """Warps the neutral photo to driven landmark positions, one RGB frame at a time."""

    def __init__(self, neutral: face.NeutralFace) -> None:
        import cv2
        from scipy.spatial import Delaunay

        self.neutral = neutral
        h, w = neutral.image.shape[:2]
        self.size = (w, h)
        mesh = np.array([i for i in range(contract.N_LANDMARKS) if i not in face.IRIS])
        self.mesh = mesh
        pts = neutral.points_px[mesh, :2]
        centre = pts.mean(0)
        radius = np.abs(pts - centre).max(0) * RING_SCALE
        ang = np.linspace(0, 2 * np.pi, RING_POINTS, endpoint=False)
        ring = centre + radius * np.stack([np.cos(ang), np.sin(ang)], 1)
        ring = np.clip(ring, 2, np.array([w, h]) - 3)
        edge = np.linspace(0, 1, 7)
        border = np.concatenate([
            np.stack([edge * (w - 1), np.zeros(7)], 1), np.stack([edge * (w - 1), np.full(7, h - 1)], 1),
            np.stack([np.zeros(5), edge[1:-1] * (h - 1)], 1),
            np.stack([np.full(5, w - 1), edge[1:-1] * (h - 1)], 1),
        ])  # fmt: skip
        self.ring = ring
        self.border = border
        self.src = np.concatenate([pts, ring, border])
        self.triangles = Delaunay(self.src).simplices.astype(np.int64)
        self.rigid_idx = np.array([i for i, m in enumerate(mesh) if m in face.RIGID_POINTS])
        ss = SUPERSAMPLE
        self.image = cv2.resize(neutral.image, (w * ss, h * ss), interpolation=cv2.INTER_CUBIC).astype(
            np.float32
        )
        self.eye_deltas = [self._closed_eye_delta(lids) for lids in eye_polygons()]
        yy, xx = np.mgrid[0 : h * ss, 0 : w * ss]
        self.grid = (np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)], 1) + [0.5, 0.5, 0]).astype(
            np.float32
        )

    def _closed_eye_delta(self, lid_ids: tuple[int, ...]) -> np.ndarray:
        """(inpainted photo − photo) inside one eye opening, at the supersampled size."""
        import cv2

        w, h = self.size
        ss = SUPERSAMPLE
        poly = (self.neutral.points_px[list(lid_ids), :2] * ss).astype(np.int32)
        mask = np.zeros((h * ss, w * ss), np.uint8)
        cv2.fillPoly(mask, [poly], 255)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2)
        img = self.image.clip(0, 255).astype(np.uint8)
        filled = cv2.inpaint(img, mask, 5, cv2.INPAINT_TELEA).astype(np.float32)
        soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (5, 5), 0)[..., None]
        return (filled - self.image) * soft

    def frame(self, points_px: np.ndarray, closure: np.ndarray) -> np.ndarray:
        """RGB uint8 frame with the mesh at points_px [478, 3] and eye closures (right, left) in 0..1."""
        import cv2

        w, h = self.size
        ss = SUPERSAMPLE
        dst_mesh = points_px[self.mesh, :2]
        scale, rot, shift = _similarity(self.src[self.rigid_idx], dst_mesh[self.rigid_idx])
        ring = (scale * (rot @ self.ring.T)).T + shift
        ring = np.clip(ring, 2, np.array([w, h]) - 3)
        dst = np.concatenate([dst_mesh, ring, self.border]) * ss
        src = self.src * ss
        tri_dst, tri_src = dst[self.triangles], src[self.triangles]
        ids = np.full((h * ss, w * ss), -1, np.int32)
        for i, tri in enumerate(np.round(tri_dst * 16).astype(np.int32)):
            cv2.fillConvexPoly(ids, tri, i, lineType=cv2.LINE_8, shift=4)
        affine = _inverse_affines(tri_dst, tri_src)  # [M + 1, 2, 3]; row M = identity for uncovered pixels
        flat = np.where(ids < 0, len(tri_dst), ids).ravel()
        gx, gy = self.grid[:, 0], self.grid[:, 1]
        coef = [np.take(affine[:, r, c], flat) for r in range(2) for c in range(3)]
        map_x = (coef[0] * gx + coef[1] * gy + coef[2]).reshape(h * ss, w * ss) - 0.5
        map_y = (coef[3] * gx + coef[4] * gy + coef[5]).reshape(h * ss, w * ss) - 0.5
        source = self.image
        weights = np.clip((np.asarray(closure) - 0.35) / 0.5, 0, 1) ** 2
        if weights.max() > 0:
            source = source + sum(wt * d for wt, d in zip(weights, self.eye_deltas, strict=True))
        out = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out = _paint_cavity(out, points_px[list(INNER_MOUTH), :2] * ss)
        for wt, lid in zip(weights, (face.RIGHT_UPPER_LID, face.LEFT_UPPER_LID), strict=True):
            if wt > 0:  # a closed eye shows its lash line: without it the tracker reads a skin patch as open
                out = _paint_lashes(out, points_px[list(lid), :2] * ss, float(wt), ss)
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _paint_cavity(image: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """The open mouth (inner lip polygon, supersampled pixels) filled with a dark cavity, soft-edged."""
    import cv2

    y0, y1, x0, x1 = _roi(polygon, image.shape, margin=6)  # the blend changes nothing outside the polygon
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    pts = np.round((polygon - [x0, y0]) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1.0, lineType=cv2.LINE_AA, shift=4)
    if mask.sum() < 4.0:  # lips closed: nothing to paint
        return image
    soft = cv2.GaussianBlur(mask, (5, 5), 0)[..., None]
    out = image.copy()
    out[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - soft) + np.asarray(CAVITY_RGB, np.float32) * soft
    return out


def _roi(points: np.ndarray, shape: tuple, margin: int) -> tuple[int, int, int, int]:
    """Integer pixel box (y0, y1, x0, x1) around points plus margin, inside the image: painting there is the
    same as painting the whole image (the masks are zero beyond the polygon's antialiased edge + blur)."""
    lo = np.floor(points.min(axis=0)).astype(int) - margin
    hi = np.ceil(points.max(axis=0)).astype(int) + margin + 1
    x0, y0 = max(0, lo[0]), max(0, lo[1])
    x1, y1 = min(shape[1], hi[0]), min(shape[0], hi[1])
    return y0, max(y0 + 1, y1), x0, max(x0 + 1, x1)


def _paint_lashes(image: np.ndarray, lid: np.ndarray, weight: float, ss: int) -> np.ndarray:
    """A dark, soft line along the (closed) upper lid, blended in with weight 0..1."""
    import cv2

    thickness = max(1, round(1.5 * ss))
    y0, y1, x0, x1 = _roi(lid, image.shape, margin=thickness + 4)
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    pts = np.round((lid - [x0, y0]) * 16).astype(np.int32)[None]
    cv2.polylines(mask, pts, False, 1.0, thickness=thickness, lineType=cv2.LINE_AA, shift=4)
    soft = cv2.GaussianBlur(mask, (3, 3), 0)[..., None] * (0.8 * weight)
    out = image.copy()
    out[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - soft) + np.asarray(LASH_RGB, np.float32) * soft
    return out


def _inverse_affines(tri_dst: np.ndarray, tri_src: np.ndarray) -> np.ndarray:
    """Per-triangle affine maps dst → src as float32 [M + 1, 2, 3], with an identity map appended.

    Closed-form 3-point solve (vectorised); a collapsed destination triangle samples its source centroid.
    """
    (x0, y0), (x1, y1), (x2, y2) = tri_dst[:, 0].T, tri_dst[:, 1].T, tri_dst[:, 2].T
    det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    ok = np.abs(det) > 1e-6
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    # Barycentric weights of a point p: l1 = a1·(p - p0), l2 = a2·(p - p0), l0 = 1 - l1 - l2.
    a1 = np.stack([(y2 - y0) * inv, -(x2 - x0) * inv], 1)
    a2 = np.stack([-(y1 - y0) * inv, (x1 - x0) * inv], 1)
    s0, s1, s2 = tri_src[:, 0], tri_src[:, 1], tri_src[:, 2]
    d1, d2 = s1 - s0, s2 - s0  # [M, 2]
    lin = d1[:, :, None] * a1[:, None, :] + d2[:, :, None] * a2[:, None, :]  # [M, 2, 2]
    shift = s0 - np.einsum("mij,mj->mi", lin, tri_dst[:, 0])
    centroid = tri_src.mean(axis=1)
    lin[~ok] = 0.0
    shift[~ok] = centroid[~ok]
    out = np.zeros((len(tri_dst) + 1, 2, 3), np.float32)
    out[:-1, :, :2], out[:-1, :, 2] = lin, shift
    out[-1] = [[1, 0, 0], [0, 1, 0]]
    return out


def eye_polygons() -> tuple[tuple[int, ...], tuple[int, ...]]:
    right = (
        face.RIGHT_EYE_CORNERS[0],
        *face.RIGHT_UPPER_LID,
        face.RIGHT_EYE_CORNERS[1],
        *face.RIGHT_LOWER_LID[::-1],
    )
    left = (
        face.LEFT_EYE_CORNERS[0],
        *face.LEFT_UPPER_LID,
        face.LEFT_EYE_CORNERS[1],
        *face.LEFT_LOWER_LID[::-1],
    )
    return right, left


# What covers a face in a rendered clip, as in the .npz generator: a mask (or pacifier and hand) over the
# lower face from the nose bridge down, and a blanket or hand over the whole face when the tracker should
# lose it.
LOWER_FACE = (
    234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 6,
)  # fmt: skip
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
    176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
MASK_RGB = (150, 190, 215)  # a surgical mask's pale blue
BLANKET_RGB = (205, 200, 185)


def _cover(frame: np.ndarray, polygon: np.ndarray, rgb, rng: np.random.Generator) -> np.ndarray:
    import cv2

    out = frame.copy()
    cv2.fillPoly(out, [np.round(polygon).astype(np.int32)], tuple(int(c) for c in rgb), lineType=cv2.LINE_AA)
    inside = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(polygon).astype(np.int32)], 1)
    grain = rng.normal(0, 6, frame.shape).astype(np.float32) * inside[..., None]  # cloth texture, not flat
    return np.clip(out.astype(np.float32) + grain, 0, 255).astype(np.uint8)


def cover_lower_face(frames: np.ndarray, driven_px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Frames with the lower face (nose bridge down to the chin) covered by a mask, following the head."""
    return np.stack(
        [_cover(f, p[list(LOWER_FACE), :2], MASK_RGB, rng) for f, p in zip(frames, driven_px, strict=False)]
    )


def cover_face(
    frames: np.ndarray, driven_px: np.ndarray, lost: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Frames where `lost` is set get the whole face (its outline, enlarged 20%) covered by a blanket."""
    out = frames.copy()
    for i in np.flatnonzero(lost):
        oval = driven_px[i][list(FACE_OVAL), :2]
        centre = oval.mean(axis=0)
        out[i] = _cover(frames[i], centre + 1.2 * (oval - centre), BLANKET_RGB, rng)
    return out


def render_frames(neutral: face.NeutralFace, driven_px: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] uint8 frames for driven meshes [T, 478, 3] (photo pixels) and closures [T, 2]."""
    r = Renderer(neutral)
    return np.stack([r.frame(p, c) for p, c in zip(driven_px, closure, strict=True)])


def h264_options(**options: str) -> dict[str, str]:
    """libx264's `options` for an encode that gives the same bytes each time: one thread, and on a CPU with
    AVX-512 x264's AVX2 code. On a Zen 4 EPYC its AVX-512 code encoded the same 160x160 frames differently
    from one call to the next, even on one thread, so two test clips meant to show the same pictures did not;
    its AVX2 code gave the same bytes every time, and for the 384x384 renders the same bytes as AVX-512."""
    return {**options, "threads": "1", **({"x264-params": "asm=AVX2"} if _has_avx512() else {})}


@functools.cache
def _has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and " avx512f" in line for line in info)
    except OSError:  # not Linux: x264 picks its own code
        return False


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    audio: np.ndarray | None = None,
    sample_rate: int = contract.SAMPLE_RATE,
    fps: int = contract.FPS,
) -> None:
    """H.264 (libx264, yuv420p, CRF 18) video at fps plus mono AAC audio, muxed into MP4 with PyAV."""
    import av

    t, h, w, _ = frames.shape
    with av.open(os.fspath(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = h264_options(crf="18", preset="veryfast")
        sound = None
        if audio is not None and audio.size:
            sound = container.add_stream("aac", rate=int(sample_rate), layout="mono")
            sound.bit_rate = 96_000
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            pcm = np.clip(np.asarray(audio, np.float32) * 32767, -32768, 32767).astype(np.int16)
            chunk = 1024
            for start in range(0, pcm.size, chunk):
                block = pcm[None, start : start + chunk]
                aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="s16", layout="mono")
                aframe.sample_rate = int(sample_rate)
                aframe.pts = start
                aframe.time_base = Fraction(1, int(sample_rate))
                container.mux(sound.encode(aframe))
            container.mux(sound.encode())
