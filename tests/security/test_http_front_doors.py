"""The web process's front doors against an unauthenticated peer: a real ``zexec up``
stack (broker + web process as subprocesses), driven over loopback with raw HTTP.

- Bodies over ``ZEXEC_HTTP_MAX_BODY_BYTES`` get 413: declared ones before a byte is read,
  chunked ones as soon as they pass the limit; the web process's memory stays put.
- A Bearer token is checked before the body is read (a bad token is 401 even with a body
  that could never parse).
- A token sent by mistake in a query string never reaches the log file.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers.cli import ZEXEC

pytestmark = pytest.mark.timeout(120)

LIMIT = 1024**2  # the default of ZEXEC_HTTP_MAX_BODY_BYTES


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("http-front") / "state"
    up = subprocess.run([*ZEXEC, "up", "--state-dir", str(state)], capture_output=True,
                        text=True, timeout=90)
    assert up.returncode == 0, up.stdout + up.stderr
    doc = json.loads((state / "stack.json").read_text())
    doc["state"] = state
    yield doc
    subprocess.run([*ZEXEC, "down", "--state-dir", str(state)], capture_output=True, timeout=90)


def raw_request(url: str, head: str, body_chunks, read_timeout: float = 10.0) -> str:
    """Send ``head`` then the chunks (stopping if the server hung up), return the
    status line. A raw socket, so nothing buffers the body on our side either."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout) as s:
        s.sendall(head.encode())
        try:
            for chunk in body_chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: that is the point
        data = b""
        while b"\r\n" not in data:
            got = s.recv(4096)
            if not got:
                break
            data += got
    return data.split(b"\r\n", 1)[0].decode()


def test_declared_oversized_body_is_refused_unread(stack):
    spawn = stack["deploy_api_url"] + "/rexec/spawn"
    path = urlsplit(spawn).path
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            f"\r\nContent-Length: {150 * 1024**2}\r\n\r\n")
    pid = stack["components"]["web"]["pid"]
    before = rss_kib(pid)
    status = raw_request(spawn, head, [b"a" * 65536] * 16)  # 1 MiB sent, 150 MiB declared
    assert status.split()[1] == "413", status
    assert rss_kib(pid) - before < 32 * 1024


def test_chunked_oversized_body_is_cut_at_the_limit(stack):
    for url in (stack["deploy_api_url"] + "/rexec/spawn", stack["ep_api_url"] + "/search"):
        path = urlsplit(url).path
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 65536
        framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        pid = stack["components"]["web"]["pid"]
        before = rss_kib(pid)
        status = raw_request(url, head, (framed for _ in range(2400)))  # 150 MiB offered
        assert status.split()[1] == "413", (url, status)
        assert rss_kib(pid) - before < 32 * 1024


def test_body_within_limit_still_works(stack):
    alice = stack["tokens"]["alice"]
    r = httpx.post(stack["ep_api_url"] + "/search", json={"search_term": "x" * 1000},
                   headers={"Authorization": f"Bearer {alice}"}, timeout=10)
    assert r.status_code != 413


def test_bearer_token_is_checked_before_the_body(stack):
    spawn = stack["deploy_api_url"] + "/rexec/spawn"
    r = httpx.post(spawn, content=b"{not json", timeout=10,
                   headers={"Authorization": "Bearer forged", "Content-Type": "application/json"})
    assert r.status_code == 401, r.text
    # Without a token the body is all there is: a malformed one is still a 422.
    r = httpx.post(spawn, content=b"{not json", headers={"Content-Type": "application/json"},
                   timeout=10)
    assert r.status_code == 422


def test_query_strings_never_reach_the_log(stack):
    secret = "tok-in-query-" + str(time.time_ns())
    for url in (stack["ep_api_url"] + "/status/", stack["deploy_api_url"] + "/rexec/broker-config"):
        r = httpx.get(url, params={"token": secret}, timeout=10)
        assert r.status_code < 500
    log = Path(stack["components"]["web"]["log"])
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text()
        if "/status/ HTTP" in text and "broker-config HTTP" in text:
            break
        time.sleep(0.05)
    assert "/status/ HTTP" in text, text[-2000:]  # the access log is on and was written
    assert secret not in text
