"""An interface engine's reject text in any charset or script reaches the caller intact and never breaks the
answer. An ISO-8859-1 ACK (MSH-18 `8859/1`) was decoded as UTF-8 into U+FFFD, which Starlette could not write
into the Latin-1 `X-HL7-Delivery` header: a bare 500 after the clip was scored, audited and counted as 200,
and the same outcome, stored under the Idempotency-Key, failed every retry the same way. The HTTP route runs
here against a real loopback MLLP engine (like test_hl7_redelivery.py)."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

from support.asgi import score_request
from support.fake_gateway import FakeGateway, delivered
from support.gateway import wav_bytes
from support.responses import make_response

from preprocess_service import hl7_outcome, http_routes, mllp
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.sdk import Client
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings

GERMAN = "Patient nicht gefunden, Prüfung fehlgeschlagen"


def body() -> bytes:
    fields = {"age_group": "adult", "deliver": "hl7v2", "subject_ref": "Patient/p-17"}
    parts = [
        b'--XX\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + wav_bytes(3.0) + b"\r\n",
        *(
            f'--XX\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        ),
        b"--XX--\r\n",
    ]
    return b"".join(parts)


def engine(reason: str, charset: str):
    """An engine that rejects every message (AR) with `reason`, encoded in `charset` (MSH-18 says which)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        control_id = (await mllp.read_frame(reader)).split("\r")[0].split("|")[9]
        declared = "8859/1" if charset == "latin-1" else "UNICODE UTF-8"
        msh = f"MSH|^~\\&|ENGINE|HOSP|||20260501101500||ACK|A1|P|2.5|||||||{declared}"
        ack = f"{msh}\rMSA|AR|{control_id}|{reason}\r"
        writer.write(mllp.START + ack.encode(charset) + mllp.END)
        await writer.drain()
        writer.close()

    return handle


def post_twice(reason: str, charset: str) -> list[tuple[int, str, list]]:
    """The same request twice under one Idempotency-Key: (status, X-HL7-Delivery, counted statuses) each."""
    scored, _ = make_response()

    async def run() -> list[tuple[int, str, list]]:
        server = await asyncio.start_server(engine(reason, charset), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = {
            "triton_url": "127.0.0.1:1",
            "grpc_enabled": False,
            "hl7_mllp_target": f"127.0.0.1:{port}",
        }
        service = ScoringService(GatewaySettings.load(settings | {"hl7_mllp_retries": 0}, {}))
        counted: list = []
        service.record = lambda route, protocol, status: counted.append(status)

        async def scoring(request, **kwargs) -> object:
            return scored.model_copy(update={"request_id": request.request_id})

        service.score = scoring
        answers = []
        try:
            for _ in range(2):
                request = score_request(
                    [{"type": "http.request", "body": body(), "more_body": False}],
                    [(b"idempotency-key", b"order-4711-pain-1")],
                )
                response = await asyncio.wait_for(http_routes.score(service, request), 10)
                answers.append((response.status_code, response.headers.get("x-hl7-delivery"), list(counted)))
                counted.clear()
        finally:
            server.close()
            await service.close()
        return answers

    return asyncio.run(run())


def test_a_latin1_reject_text_reaches_the_header_readable_and_every_retry_is_answered():
    """The header percent-encodes the text's UTF-8 (RFC 3986): it was Python's backslashreplace, `Pr\\xfcfung`
    and `\\u2019`, which no integrator's stack decodes; any URL decoder reads this one back."""
    for status, header, counted in post_twice(GERMAN, "latin-1"):
        assert status == 200 and counted == [200]
        assert header == "AR after 1 attempt(s): Patient nicht gefunden, Pr%C3%BCfung fehlgeschlagen"
        assert unquote(header) == f"AR after 1 attempt(s): {GERMAN}"


def test_any_script_and_control_characters_in_a_reject_give_one_ascii_line():
    reason = "患者が見つかりません\x00\x1b[31m   zu lang " + "x" * 400  # UTF-8, a NUL, an escape sequence
    (status, header, _), _ = post_twice(reason, "utf-8")
    assert status == 200 and header.isascii() and header.isprintable()
    assert header.startswith("AR after 1 attempt(s): %E6%82%A3%E8%80%85") and "%00" not in header
    assert len(header) < 1000 and header.endswith("...")
    assert unquote(header).startswith("AR after 1 attempt(s): 患者が見つかりません [31m zu lang xxx")


def test_outcome_text_keeps_letters_and_drops_controls():
    assert hl7_outcome.text("Pr\x9cfung\r\nfehlgeschlagen\u2028ok") == "Pr fung fehlgeschlagen ok"
    assert hl7_outcome.text("é" * 300, 10) == "é" * 7 + "..."
    assert hl7_outcome.header("AE after 2 attempt(s): Prüfung") == "AE after 2 attempt(s): Pr%C3%BCfung"
    assert mllp.decode("Prüfung".encode("latin-1")) == "Prüfung"
    assert mllp.decode("Prüfung €".encode()) == "Prüfung €"
    assert mllp.decode(b"\x81\xfc") == "\x81ü"  # not cp1252 either: Latin-1, byte for byte


def test_the_header_decodes_to_the_engines_text_and_the_sdk_reads_it_so():
    """A `%` or `+` in the engine's text is encoded too, so a URL or form decoder gives back exactly what
    gRPC's hl7_delivery carries; the SDK decodes the header: its result says the same over HTTP as gRPC."""
    outcome = "AR after 1 attempt(s): it\u2019s 100% wrong: a+b = «Prüfung» 患者"
    header = hl7_outcome.header(outcome)
    assert header.isascii() and header.isprintable() and "100%25" in header and "a%2Bb" in header
    assert hl7_outcome.from_header(header) == unquote(header) == outcome
    assert (
        hl7_outcome.from_header("AE after 1 attempt(s): Pr\\xfcfung") == "AE after 1 attempt(s): Pr\\xfcfung"
    )
    gateway = FakeGateway([delivered(make_response()[0].model_dump_json(), header)])
    try:
        with Client(gateway.url, retries=0) as client:
            result = client.score(ScoreRequest(audio=MediaPart(data=b"RIFF", filename="a.wav")))
    finally:
        gateway.close()
    assert result.hl7_delivery == outcome and result.hl7_deliveries == (outcome,)
