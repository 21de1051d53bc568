"""HTTP over raw sockets, for clients no HTTP library will play: ones that stall, trickle, hang up, or send
headers no library would build. Also the server's metrics as numbers."""

from __future__ import annotations

import socket
import time

import httpx

from tests.support.server import LiveServer


def address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def connect(server: LiveServer, timeout: float = 30.0) -> socket.socket:
    return socket.create_connection(address(server), timeout=timeout)


def request_head(
    length: int, boundary: str = "b0undary", path: str = "/predict", headers: dict[str, str] | None = None
) -> bytes:
    """Request line and headers of a multipart upload of ``length`` bytes."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{extra}\r\n"
    ).encode()


def part_head(boundary: str = "b0undary") -> bytes:
    """The opening boundary and headers of the ``file`` part."""
    return (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="x"\r\nContent-Type: audio/wav\r\n\r\n'
    ).encode()


def upload_head(
    length: int, boundary: str = "b0undary", path: str = "/predict", headers: dict[str, str] | None = None
) -> bytes:
    """Request line and headers of a multipart upload of ``length`` bytes, and the start of its file part."""
    return request_head(length, boundary, path, headers) + part_head(boundary)


def multipart_body(recording: bytes, boundary: str = "b0undary") -> bytes:
    """A whole multipart body holding ``recording`` as its ``file`` part."""
    return part_head(boundary) + recording + f"\r\n--{boundary}--\r\n".encode()


def read_response(sock: socket.socket, has_body: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length (of its head only when
    ``has_body`` is false: the answer to a HEAD request); what follows it (a second response) is left."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response: {data[:200]!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0")) if has_body else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the response body")
        body += chunk
    return int(lines[0].split()[1]), headers, body[:length]


def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the server has closed the connection (recv returns b"" or the connection is reset)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def metric(server: LiveServer, prefix: str) -> float:
    """The sum of every sample whose line starts with ``prefix`` (0 when there is none)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def in_flight(server: LiveServer) -> float:
    return metric(server, "acula_requests_in_flight") - 1  # minus this scrape itself


def wait_until(condition, timeout: float = 30.0, every: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory (``VmRSS``) or its peak so far (``VmHWM``), in MiB, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise LookupError(field)
