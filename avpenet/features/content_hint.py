"""What an upload's first bytes look like, for the 415 that refuses them: the content decides, never the name.

A refusal that named the file's extension as its content (`unsupported audio type ('wav' content)`) told an
integrator the WAV was bad when the bytes were not a WAV at all; the commonest such bytes are the file sent
as base64 text (a JSON habit), which is named as such. Only the head (media.HEAD_BYTES) is read.
"""

from __future__ import annotations

import base64
import binascii
import re

# Up to 344 base64 characters (258 bytes) are decoded: enough for every container's signature (media.sniff)
B64_CHARS = 344
_B64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_DATA_URL = re.compile(rb"data:[\w.+/-]*;base64,")


def described(head: bytes) -> str:
    """What `head` is, in words: a container media.sniff knows, base64 text of one, text, or none known."""
    from avpenet.features import media

    kind = media.sniff(head)
    if kind is not None:
        return f"its bytes are of another kind: {media.describe(kind)}"  # no article: "a MP4" misreads
    inner = _base64_of(head)
    if inner is not None:
        return f"its bytes are base64 text of a media file ({inner}): send the file's own bytes, not base64"
    if head.isascii() and all(c >= 0x20 or c in b"\t\r\n" for c in head):
        return "its bytes are text, not a known audio or video container"
    return "its bytes are not a known audio or video container"


def _base64_of(head: bytes) -> str | None:
    """The media named by base64 text at the start of `head` (a data: URL's prefix skipped), else None."""
    from avpenet.features import media

    text = head.lstrip()
    if match := _DATA_URL.match(text):
        text = text[match.end() :]
    text = b"".join(text[:B64_CHARS].split())  # line-wrapped base64 (76 a line) is still base64
    text = text[: len(text) // 4 * 4]
    if len(text) < 16 or not _B64.fullmatch(text):
        return None
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    kind = media.sniff(decoded)
    if kind is not None:
        return media.describe(kind)
    refused = media.sniff_refused(decoded)  # AVI, MPEG-TS...: named, as their bytes would be
    return f"{refused} video" if refused else None
