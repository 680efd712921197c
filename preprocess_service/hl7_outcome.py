"""What an HL7 delivery outcome means, shared by the gateway (mllp.py sends, clinical.py redelivers on a
retry) and the SDK (sdk.py resends the request while the outcome may pass). Standard library only, and no
gateway module: the SDK imports it and must stay light (no asyncio, hl7apy or Ray for a client).

An outcome is the one line the gateway answers in `X-HL7-Delivery` (HTTP) or `hl7_delivery` (gRPC): the MSA-1
code or the failure, then how many attempts, e.g. `AA after 1 attempt(s)`, `UNREACHABLE after 3 attempt(s):
ConnectionRefusedError`, `NOT_SENT: the HL7 message could not be built (...)`; "" when none was asked for.
The engine's own reason in it is `text`-cleaned (no control characters, bounded), and `header` makes the line
ASCII for HTTP: an engine's reject text in any language or charset must never break the answer. It
percent-encodes the UTF-8 bytes of every character beyond printable ASCII, and `%` and `+` (RFC 3986's
percent-encoding, as RFC 8187 uses for header parameters): `Prüfung` → `Pr%C3%BCfung`, which any URL decoder
reads back (`unquote`, `decodeURIComponent`), as the SDK does (`from_header`). It was Python's
backslashreplace (`Pr\\xfcfung`, `\\u2019`), which no integrator's stack decodes. The HTTP answer's JSON body
does not carry the outcome: this header is where HTTP has it.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote

DELIVERED = ("AA", "CA")  # the engine accepted the message
REJECTED = ("AR", "CR")  # the engine refused it: the same message would be refused again
# Failures another try may pass: the engine failed (AE/CE), was down or slow, or answered with no valid ACK.
PASSING = ("AE", "CE", "TIMEOUT", "UNREACHABLE", "BAD_ACK")
# written as they are in the header; `%` and `+` encoded too, so form decoders (`+` = space) read it right
HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%+")
# Why a delivery without a patient is refused: 422 / INVALID_ARGUMENT before scoring; the SDK, before sending
NO_SUBJECT = (
    "deliver=hl7v2 (gRPC deliver_hl7) needs subject_ref: the patient's identifier for PID-3, as a FHIR "
    "reference like Patient/123; without it the interface engine cannot file the result under a patient"
)


def code(outcome: str) -> str:
    """The outcome's first word: an MSA-1 code, TIMEOUT, UNREACHABLE, BAD_ACK or NOT_SENT ("" for none)."""
    return outcome.partition(" ")[0].rstrip(":")


def may_pass(outcome: str) -> bool:
    """Whether a delivery failed for a reason that may pass (engine down, timed out, AE/CE), so sending the
    request again under the same Idempotency-Key sends the message again; AA/CA (delivered), AR/CR (rejected)
    and NOT_SENT (the message cannot be built) would only repeat themselves."""
    return code(outcome) in PASSING


def text(value: str, limit: int = 200) -> str:
    """`value` as one line of at most `limit` characters: control and line-separator characters (an
    engine's CR/LF, C1 controls from Latin-1 bytes, NUL) become spaces, runs of spaces one. Letters of any
    script stay."""
    kept = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in value)
    line = " ".join(kept.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def header(outcome: str) -> str:
    """`outcome` as an HTTP header value (`X-HL7-Delivery`): one line of printable ASCII, the UTF-8 bytes of
    every other character and of `%` and `+` percent-encoded (`Prüfung` → `Pr%C3%BCfung`), so no text from an
    interface engine can fail the answer. gRPC's `hl7_delivery` carries the same line as it is."""
    return quote(text(outcome, 400), safe=HEADER_SAFE)


def from_header(value: str) -> str:
    """The outcome an `X-HL7-Delivery` value carries, percent-decoded (`header` undone): the same text gRPC's
    `hl7_delivery` has. A value from an older gateway (Python escapes) is left as it is, unless the engine's
    text in it held `%` and two hex digits, which are then read as an escape."""
    return unquote(value)
