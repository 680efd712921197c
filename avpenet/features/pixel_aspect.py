"""Non-square pixels: a video's frames are tracked at the shape a player shows them, not as coded.

Some cameras and recorders store frames with pixels that are not square and say so in the file: HDV and
broadcast HD (1440 x 1080 shown as 1920 x 1080, sample aspect ratio 4:3), DV and SD capture cards (720 x 576
or 720 x 480 with 16:15, 64:45, 8:9 or 32:27), anamorphic lenses. Every player stretches such a frame before
showing it; read as coded, a face is squeezed or widened, the landmarker sees another face shape and the
features built from its landmarks (in pixels, so the image's aspect is respected) move with it. Rendered
and most phone clips have square pixels, which pass through unchanged.
"""

from __future__ import annotations

from fractions import Fraction

from avpenet.errors import UndecodableMedia

# Past 4:1 either way no camera's pixels (the widest in H.264's table of ratios is 32:11, about 2.9: 352 x 576
# shown at 16:9); such a ratio is a damaged or forged header.
MAX_RATIO = 4
INTERPOLATION = "BICUBIC"  # FFmpeg's scaler default, as ffplay and the scale filter draw it


def accepted(ratio: Fraction) -> bool:
    """A pixel shape some camera has: from 1:MAX_RATIO to MAX_RATIO:1."""
    return Fraction(1, MAX_RATIO) <= ratio <= MAX_RATIO


def stream_ratio(stream, what: str) -> Fraction:
    """Width:height of one coded pixel as a player shows it (FFmpeg's guess from the container's and the
    codec's sample aspect ratio); 1 when the file declares none. A ratio past MAX_RATIO: UndecodableMedia."""
    sar = stream.sample_aspect_ratio
    if not sar or sar <= 0:
        return Fraction(1)
    if not accepted(sar):
        raise UndecodableMedia(
            f"{what} declares a pixel shape of {sar.numerator}:{sar.denominator} (width:height of one pixel, "
            f"its sample aspect ratio); accepted shapes are 1:{MAX_RATIO} to {MAX_RATIO}:1"
        )
    return sar


def display_size(width: int, height: int, ratio: Fraction, max_pixels: int) -> tuple[int, int]:
    """Square-pixel (width, height) of a coded frame: its width times `ratio`, as a player shows it; where
    that would pass `max_pixels`, its height divided by `ratio` instead, so no frame holds more pixels than
    the limit that admitted the coded one."""
    if ratio == 1:
        return width, height
    wide = max(1, round(width * ratio))
    if ratio < 1 or wide * height <= max_pixels:
        return wide, height
    return width, max(1, round(height / ratio))
