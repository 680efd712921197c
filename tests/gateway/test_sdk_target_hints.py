"""A target refused when the Client is made says what to write instead (sdk_target.py).

An IPv6 address without its brackets (`::1:8001`, `http://::1:8000`) was refused as "no host", or
`fe80::1:9090` as a port that is not a number, neither of which says that the address needs brackets; and
`[::1:9090` escaped as urllib's bare ValueError "Invalid IPv6 URL", not the documented TargetError."""

from __future__ import annotations

import pytest

from preprocess_service.client import check_target, score_grpc, score_http
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.sdk import Client, TargetError


@pytest.mark.parametrize(
    ("target", "grpc", "written"),
    [
        ("::1:8001", True, "[::1]:8001"),
        ("fe80::1:9090", True, "[fe80::1]:9090"),
        ("2001:db8::7:9000", True, "[2001:db8::7]:9000"),
        ("::1", True, "[::1]:9090"),  # no port: gRPC needs one, `avpenet serve`'s
        ("http://::1:8000", False, "http://[::1]:8000"),
        ("https://2001:db8::1/avpenet", False, "https://[2001:db8::1]/avpenet"),  # path kept
    ],
)
def test_an_ipv6_address_without_brackets_is_refused_with_them(target, grpc, written):
    with pytest.raises(TargetError) as info:
        Client(target, grpc=grpc)
    assert info.value.detail == f"target {target}: an IPv6 address needs brackets: {written}"
    Client(written, grpc=grpc).close()  # what it says to write is taken


def test_brackets_that_do_not_close_or_hold_no_address_are_a_target_error():
    for target, grpc in [("[::1:9090", True), ("http://[::1:8080", False), ("[gateway]:9090", True)]:
        with pytest.raises(TargetError, match=r"brackets hold an IPv6 address .*\(e\.g\. (http://)?\[::1\]:"):
            Client(target, grpc=grpc)
    with pytest.raises(TargetError, match="more than one ':' in host:port; an IPv6 address needs brackets"):
        Client("gateway:9090:1", grpc=True)


def test_the_cli_says_the_same_for_its_url():
    with pytest.raises(ValueError, match=r"--url ::1:9090: an IPv6 address needs brackets: \[::1\]:9090"):
        check_target("::1:9090", grpc=True)


def test_the_single_attempt_forms_name_each_other_not_a_client_argument():
    """score_http("127.0.0.1:8080") said "or use grpc=True", an argument score_http does not take: its gRPC
    form is score_grpc; and score_grpc("http://...") said "with grpc=True", naming no way to send a URL."""
    request = ScoreRequest(audio=MediaPart(data=b"RIFF....", filename="a.wav"))
    with pytest.raises(TargetError) as info:
        score_http("127.0.0.1:8080", request)
    assert info.value.problem == "give http(s)://host:port (e.g. http://127.0.0.1:8080), or use score_grpc"
    with pytest.raises(TargetError) as info:
        score_grpc("http://127.0.0.1:9090", request)
    assert info.value.problem == "give host:port (e.g. 127.0.0.1:9090), not a URL, or use score_http"
    with pytest.raises(TargetError, match="or use grpc=True"):  # the Client's own switch, still named
        Client("127.0.0.1:8080")


def test_an_unbracketed_ipv6_target_without_a_scheme_gets_both_hints_at_once():
    """Client("::1:8001") said only "give http(s)://... or use grpc=True"; a user who then passed grpc=True
    was refused again, for the brackets. Now the first refusal says both."""
    with pytest.raises(TargetError) as info:
        Client("::1:8001")
    assert info.value.problem == (
        "give http(s)://host:port (e.g. http://127.0.0.1:8080), or use grpc=True; "
        "as a gRPC target, an IPv6 address needs brackets: [::1]:8001"
    )
    with pytest.raises(TargetError) as info:
        Client("127.0.0.1:8001")  # an IPv4 host:port: the one hint, as before
    assert info.value.problem == "give http(s)://host:port (e.g. http://127.0.0.1:8080), or use grpc=True"
