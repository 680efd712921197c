"""Send an HL7 v2 message to an interface engine over MLLP (TCP, <VT> message <FS><CR>) and read its ACK.

Original-mode acknowledgement (MSA-1): AA/CA = accepted; AE/CE = the engine failed to process it (retried, the
failure may be transient); AR/CR = rejected (not retried: resending the same message cannot help). Connection
errors and timeouts are retried with exponential backoff. Every attempt opens its own connection, so a
half-read ACK from a broken connection can never be matched to the wrong message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from dataclasses import dataclass

from preprocess_service import hl7_outcome
from preprocess_service.hl7_outcome import DELIVERED, REJECTED

log = logging.getLogger("avpenet.gateway")
START, END = b"\x0b", b"\x1c\x0d"
MAX_ACK_BYTES = 64 * 1024
ACK_CODES = ("AA", "AE", "AR", "CA", "CE", "CR")
# The failures `send` retries (DeliveryError.code) are hl7_outcome.PASSING; AR/CR (REJECTED) never pass.


class DeliveryError(Exception):
    """The message was not accepted: `code` is the MSA-1 code, or TIMEOUT / UNREACHABLE / BAD_ACK."""

    def __init__(self, code: str, detail: str, attempts: int) -> None:
        super().__init__(f"HL7 delivery failed ({code}) after {attempts} attempt(s): {detail}")
        self.code = code
        self.detail = detail
        self.attempts = attempts


@dataclass(frozen=True)
class Delivery:
    """An accepted message: the engine's MSA-1 code and how many attempts it took."""

    code: str
    attempts: int


@dataclass(frozen=True)
class MllpTarget:
    host: str
    port: int
    timeout_s: float = 5.0  # per attempt: connect, send and read the ACK
    retries: int = 2  # extra attempts after the first
    backoff_s: float = 0.2  # first retry delay; doubles each time

    @classmethod
    def parse(cls, target: str, **kwargs) -> MllpTarget:
        """`host:port` or `[IPv6]:port` (the gateway setting `hl7_mllp_target`)."""
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"MLLP target {target!r} is not host:port (a port 1-65535)")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"MLLP target {target!r}: put an IPv6 address in brackets, e.g. [::1]:2575")
        return cls(host.strip("[]"), int(port), **kwargs)


def frame(message: str) -> bytes:
    return START + message.encode("utf-8") + END


async def read_frame(reader: asyncio.StreamReader) -> str:
    """One MLLP frame's payload; bytes before <VT> are discarded (MLLP allows none, engines send some)."""
    data = await reader.readuntil(END)
    if len(data) > MAX_ACK_BYTES:
        raise ValueError("ACK larger than 64 KiB")
    start = data.find(START)
    if start < 0:
        raise ValueError("frame without a <VT> start byte")
    return decode(data[start + 1 : -len(END)])


def decode(payload: bytes) -> str:
    """An engine's bytes as text, nothing lost: UTF-8, else Windows-1252 / ISO-8859-1, which engines that
    declare MSH-18 `8859/1` send (decoding those as UTF-8 turned their reject text into U+FFFD)."""
    for charset in ("utf-8", "cp1252"):
        try:
            return payload.decode(charset)
        except UnicodeDecodeError:
            continue
    return payload.decode("latin-1")  # every byte is a character: never fails


def ack_code(ack: str, control_id: str) -> tuple[str, str]:
    """(MSA-1, the engine's reason) of an ACK to `control_id`; ValueError if it is not one.

    Read by hand, leniently, not with hl7apy's strict parser: engines answer in their own HL7 version (2.3.1,
    2.9), fill only what they need (MSH-9 `ACK` alone, no MSH-7, an ERR without ERR-3), and separate segments
    with LF. A strict parse turned such an accepting ACK into BAD_ACK, and the message was sent again and
    filed twice. Only MSA-1, MSA-2 and the reason (MSA-3, else the ERR segment's text) are used."""
    segments = [seg for seg in re.split(r"[\r\n]+", ack) if seg]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 5:
        raise ValueError("the answer does not start with an MSH segment")
    fs, cs = segments[0][3], segments[0][4]  # field and component separators, as MSH-1/MSH-2 declare them
    fields = {seg[:3]: seg.split(fs) for seg in reversed(segments)}  # the first of each segment type

    def field(segment: str, i: int) -> str:
        values = fields.get(segment, [])
        return values[i].split(cs)[0].strip() if len(values) > i else ""

    if "MSA" not in fields:
        raise ValueError("the answer has no MSA segment")
    code = field("MSA", 1)
    if code not in ACK_CODES:
        raise ValueError(f"MSA-1 {code[:8]!r} is not an acknowledgement code")
    if field("MSA", 2) != control_id:
        raise ValueError(f"ACK is for message {field('MSA', 2)[:32]!r}, not this one")
    err = "; ".join(v for v in fields.get("ERR", [])[1:] if v.strip())
    return code, hl7_outcome.text(field("MSA", 3) or err)


async def _attempt(target: MllpTarget, message: str, control_id: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(frame(message))
        await writer.drain()
        ack = await read_frame(reader)
        return ack_code(ack, control_id)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def send(target: MllpTarget, message: str, control_id: str, budget_s: float = math.inf) -> Delivery:
    """Deliver `message` (MSH-10 = `control_id`); raises DeliveryError once retries are spent or on AR/CR.
    `budget_s`: what is left of the request's time budget; no attempt or wait runs past it."""
    deadline = time.monotonic() + budget_s
    delay = target.backoff_s
    last = ("TIMEOUT", "the request's time budget ran out before the first attempt")
    attempt = 0
    while attempt <= target.retries:
        wait_s = min(target.timeout_s, deadline - time.monotonic())
        if wait_s <= 0:
            break
        attempt += 1
        try:
            code, text = await asyncio.wait_for(_attempt(target, message, control_id), wait_s)
        except TimeoutError:
            last = ("TIMEOUT", f"no ACK within {wait_s:.1f} s")
        except (OSError, asyncio.IncompleteReadError) as exc:
            last = ("UNREACHABLE", type(exc).__name__)
        except Exception as exc:  # an answer that is not a valid ACK to this message
            last = ("BAD_ACK", hl7_outcome.text(str(exc)))
        else:
            if code in DELIVERED:
                return Delivery(code, attempt)
            last = (code, text or "no reason given")
            if code in REJECTED:
                raise DeliveryError(code, last[1], attempt)
        log.info("HL7 delivery attempt %d failed: %s", attempt, last[0])
        if attempt <= target.retries:
            if deadline - time.monotonic() <= delay:
                break  # no time left for the backoff and another attempt
            await asyncio.sleep(delay)
            delay *= 2
    raise DeliveryError(last[0], last[1], attempt)
