"""One frame chunk decoded: a landmark frame (privacy mode) or an image (video mode); malformed is refused."""

from __future__ import annotations

import io

import numpy as np

from avpenet.features.track import LANDMARK_ABS_LIMIT, FaceTrack
from preprocess_service.stream.protocol import FRAME_FLOATS, FRAME_PARTS, StreamRejected

IMAGE_FORMATS = ("jpeg", "png", "rgb")


def landmark_frame(payload: memoryview, image_size: tuple[int, int]) -> FaceTrack:
    """One FRAME_LAYOUT payload as a 1-frame FaceTrack (validated: finite, plausible coordinates)."""
    if len(payload) != FRAME_FLOATS * 4:
        raise StreamRejected(
            "bad_frame", f"a landmark frame is {FRAME_FLOATS} float32 ({FRAME_FLOATS * 4} bytes)"
        )
    flat = np.frombuffer(payload, "<f4").astype(np.float32)
    if not np.isfinite(flat).all():
        raise StreamRejected("bad_frame", "landmark frame holds NaN or Inf")
    parts = {name: flat[a:b].reshape(shape) for name, shape, a, b in FRAME_PARTS}
    if np.abs(parts["landmarks"]).max() > LANDMARK_ABS_LIMIT:
        raise StreamRejected(
            "bad_frame", f"landmarks are normalised image coordinates (within ±{LANDMARK_ABS_LIMIT:g})"
        )
    return FaceTrack(
        landmarks=parts["landmarks"][None],
        blendshapes=parts["blendshapes"][None],
        face_present=np.array([parts["face_present"][0] > 0.5]),
        head_pose=parts["head_pose"][None],
        image_size=np.asarray(image_size, np.int32),
    )


def check_size(header: dict, size: int, mode: str, max_pixels: int) -> None:
    """Refuse a frame larger than its mode allows as it arrives, before it is queued: a landmark frame is
    exactly FRAME_FLOATS float32; a video frame at most raw RGB at the `max_pixels` limit (a JPEG or PNG is
    far smaller). Before, any frame up to the proxy's 16 MiB message limit was queued and counted as 0.1 s,
    so a stream could hold about 100 of them (1.6 GiB) before its flood check closed it."""
    if mode == "landmarks" and size != FRAME_FLOATS * 4:
        raise StreamRejected(
            "bad_frame", f"a landmark frame is {FRAME_FLOATS} float32 ({FRAME_FLOATS * 4} bytes); got {size}"
        )
    if mode == "video" and size > max_pixels * 3:
        raise StreamRejected(
            "bad_frame",
            f"a video frame is at most {max_pixels * 3} bytes (raw RGB at the {max_pixels}-pixel limit); "
            f"got {size}",
        )


def decode_image(header: dict, payload: memoryview, max_pixels: int) -> np.ndarray:
    """A video frame (JPEG, PNG or raw RGB as its header says) as RGB uint8, within max_pixels."""
    fmt, w, h = header.get("format"), header.get("width"), header.get("height")
    if fmt not in IMAGE_FORMATS or not all(isinstance(v, int) and v > 0 for v in (w, h)):
        raise StreamRejected(
            "bad_frame", f"video frame header needs format ({'/'.join(IMAGE_FORMATS)}), width, height"
        )
    if w * h > max_pixels:
        raise StreamRejected("frame_too_large", f"frame is {w}x{h}; the limit is {max_pixels} pixels")
    if fmt == "rgb":
        if len(payload) != w * h * 3:
            raise StreamRejected(
                "bad_frame", f"an rgb frame of {w}x{h} is {w * h * 3} bytes; got {len(payload)}"
            )
        return np.frombuffer(payload, np.uint8).reshape(h, w, 3)
    import cv2

    size = _encoded_size(payload)  # from the image's own header, before anything is decoded
    if size is None:
        raise StreamRejected("bad_frame", f"frame is not a decodable {fmt} image of {w}x{h}")
    if size != (w, h):
        raise StreamRejected("bad_frame", f"the header says {w}x{h}; the {fmt} image is {size[0]}x{size[1]}")
    try:
        bgr = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None or bgr.shape[:2] != (h, w):
        raise StreamRejected("bad_frame", f"frame is not a decodable {fmt} image of {w}x{h}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _encoded_size(payload: memoryview) -> tuple[int, int] | None:
    """(width, height) that a JPEG/PNG declares, None when it is not one: the header's width and height are
    the client's claim, and a small file can declare gigapixels (a decompression bomb) that imdecode would
    allocate before its size could be compared."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as image:  # parses the header only
            return image.size if image.format in ("JPEG", "PNG") else None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
