"""Where the SDK sends: an HTTP URL (`http(s)://host[:port][/path]`) or a gRPC target (`host:port`, or a
grpcio name-resolver target such as `dns:///host:443` or `unix:/run/gateway.sock`, left to grpcio).
A bare gRPC host is refused: grpcio would take port 443, where the SDK's plain-text channel reaches no
gateway (`avpenet serve` listens on 9090, the cluster's Service on 9000), and fail as UNAVAILABLE.

The SDK's Client checks it when it is made, and `avpenet score` / `avpenet monitor` check `--url` with the
same rule: `http://127.0.0.1:notaport` or `http://` used to go out as a request, fail inside requests, and
come back as a retried `INCOMPLETE: the answer was cut off (InvalidURL)`. An IPv6 address goes in brackets
(`[::1]:9090`, `http://[::1]:8080`): `::1:8001` said "no host", and `[::1:9090` escaped as urllib's bare
ValueError "Invalid IPv6 URL"; both now say what to write. Standard library only: the SDK's clients import it.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

HTTP_PORT, GRPC_PORT = 8080, 9090  # `avpenet serve`'s defaults (8000/8001 are Triton's)
HTTP_EXAMPLE, GRPC_EXAMPLE = f"http://127.0.0.1:{HTTP_PORT}", f"127.0.0.1:{GRPC_PORT}"
HTTP_IPV6, GRPC_IPV6 = f"http://[::1]:{HTTP_PORT}", f"[::1]:{GRPC_PORT}"  # an IPv6 address goes in brackets
# grpcio's own target forms (its name resolvers): passed on as they are, grpcio reads them
GRPC_RESOLVER = re.compile(r"(dns|unix|unix-abstract|ipv4|ipv6|vsock|xds):", re.IGNORECASE)
# scheme, user@, host[:port], the rest (path, query): where an IPv6 address without brackets would be
PARTS = re.compile(r"(?P<scheme>https?://)?(?P<user>[^/?#@]*@)?(?P<address>[^/?#]*)(?P<rest>.*)", re.DOTALL)


def target_problem(
    target: str, grpc: bool, flag: str | None = "grpc=True", url_flag: str | None = None
) -> str:
    """What is wrong with `target` as an HTTP URL, or as a gRPC target when `grpc` ("" when nothing): a
    scheme where gRPC takes none or none where HTTP needs one, an IPv6 address without its brackets (the
    target written with them) or with brackets that do not close, no host, a port that is not 1 to 65535,
    or (gRPC) none.
    `flag` is how the caller asks for gRPC (the CLI's --grpc, score_http's score_grpc), named where it would
    help; None: not at all. `url_flag`: how it sends to a URL instead (score_grpc's score_http), if it can."""
    has_scheme = target.startswith(("http://", "https://"))
    if grpc and has_scheme:
        instead = f", or use {url_flag}" if url_flag else ""
        return f"{f'with {flag} ' if flag else ''}give host:port (e.g. {GRPC_EXAMPLE}), not a URL{instead}"
    if grpc and GRPC_RESOLVER.match(target):
        return ""
    if not grpc and not has_scheme:  # an unbracketed IPv6 host:port gets both hints, not one per try
        ipv6 = ipv6_problem(target, True) if flag else ""
        return (
            f"give http(s)://host:port (e.g. {HTTP_EXAMPLE})"
            + (f", or use {flag}" if flag else "")
            + (f"; as a gRPC target, {ipv6}" if ipv6 else "")
        )
    if ipv6 := ipv6_problem(target, grpc):
        return ipv6
    example = GRPC_EXAMPLE if grpc else HTTP_EXAMPLE
    try:
        address = urlsplit(target if has_scheme else f"//{target}")
    except ValueError:  # "[::1:9090", "[gateway]:9090": urllib's "Invalid IPv6 URL"
        example = GRPC_IPV6 if grpc else HTTP_IPV6
        return f"brackets hold an IPv6 address and close before the port (e.g. {example})"
    try:  # urlsplit reads the port only when asked
        port: int | None = address.port
        port_ok = port != 0
    except ValueError:
        port, port_ok = None, False
    if not address.hostname:
        return f"no host (e.g. {example})"
    if not port_ok:
        return f"the port is not a number from 1 to 65535 (e.g. {example})"
    if grpc and port is None:
        return f"no port: give host:port (e.g. {GRPC_EXAMPLE}); grpcio would try 443, a TLS ingress's port"
    return ""


def ipv6_problem(target: str, grpc: bool) -> str:
    """ "" unless `target`'s host:port has two colons or more and no brackets (`::1:8001`, `http://::1:8000`):
    then that an IPv6 address needs brackets, and the target written with them (`[::1]:8001`), the last group
    taken as the port where the rest is an address. urllib read `::1:8001` as no host, `fe80::1:9090` as a
    port that is not a number."""
    parts = PARTS.fullmatch(target)
    address = parts["address"] if parts else ""
    if address.count(":") < 2 or "[" in address or "]" in address:
        return ""
    host, _, port = address.rpartition(":")
    if not (port.isdigit() and is_ipv6(host)):
        host, port = address, str(GRPC_PORT) if grpc else ""  # gRPC needs a port, a URL's scheme has one
        if not is_ipv6(host):
            example = GRPC_IPV6 if grpc else HTTP_IPV6
            return f"more than one ':' in host:port; an IPv6 address needs brackets (e.g. {example})"
    written = f"[{host}]" + (f":{port}" if port else "")
    if parts["scheme"]:  # the caller's scheme, user and path kept
        written = parts["scheme"] + (parts["user"] or "") + written + parts["rest"]
    return f"an IPv6 address needs brackets: {written}"


def is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True
