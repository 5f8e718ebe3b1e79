"""A package index "proxy" on loopback, standing for the chart's in-cluster PyPI proxy.

It serves devpi's URL layout (``/root/pypi/+simple/<project>/``, the chart's default
``pipIndexUrl`` path) over plain HTTP, as PEP 503 pages of the distribution files in a
local directory (filled by ``pip download`` or made here); a project it does not hold
is redirected to PyPI's page for it, as a caching proxy would fetch it upstream. Every
request is recorded (``requests``), so a test can tell what the installer asked it.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: The chart's default pipIndexUrl path (devpi's mirror of PyPI).
SIMPLE = "/root/pypi/+simple/"
FILES = "/files/"
UPSTREAM = "https://pypi.org/simple/"


def normalize(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_of(filename: str) -> str:
    """The project a wheel or sdist file belongs to (the part before its version)."""
    if filename.endswith(".whl"):
        return normalize(filename.split("-")[0])
    stem = re.sub(r"\.(tar\.gz|zip)$", "", filename)
    return normalize(stem.rsplit("-", 1)[0])


@dataclass
class LocalIndex:
    directory: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)

    def projects(self) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for f in sorted(self.directory.iterdir()):
            if f.is_file():
                out.setdefault(project_of(f.name), []).append(f)
        return out


def _handler(index: LocalIndex) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(index.directory), **kwargs)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the stdlib's name)
            pass  # recorded in index.requests instead of stderr

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            index.requests.append(self.path)
            path = self.path.split("?", 1)[0]
            if path.startswith(FILES):
                self.path = "/" + path[len(FILES):]
                return super().do_GET()
            if not path.startswith(SIMPLE):
                return self.send_error(404)
            name = normalize(path[len(SIMPLE):].strip("/"))
            files = index.projects().get(name)
            if not name:
                return self._page("Simple index", [(f"{p}/", p) for p in index.projects()])
            if files is None:  # not held here: from upstream, as a proxy fetches it
                self.send_response(302)
                self.send_header("Location", f"{UPSTREAM}{name}/")
                self.end_headers()
                return None
            return self._page(f"Links for {name}", [(f"{FILES}{f.name}", f.name) for f in files])

        def _page(self, title: str, links: list[tuple[str, str]]) -> None:
            body = "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a><br/>\n'
                           for href, text in links)
            data = (f"<!DOCTYPE html><html><head><title>{title}</title></head>"
                    f"<body><h1>{title}</h1>\n{body}</body></html>\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def serving(directory: Path) -> Iterator[LocalIndex]:
    """A :class:`LocalIndex` of ``directory`` on 127.0.0.1 (a free port) while open."""
    index = LocalIndex(directory)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(index))
    index.url = f"http://127.0.0.1:{server.server_address[1]}{SIMPLE}"
    thread = threading.Thread(target=server.serve_forever, name="local-index", daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def probe_wheel(directory: Path, name: str = "zexec_e2e_probe", version: str = "1.0",
                value: str = "from the loopback index") -> Path:
    """A one-module wheel that exists nowhere but here (so installing it proves the
    index path): ``import zexec_e2e_probe; zexec_e2e_probe.VALUE == value``."""
    import base64
    import hashlib
    import zipfile

    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VALUE = {value!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\n"
                            f"Version: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: zexec-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
        record.append(f"{path},sha256={digest.rstrip(b'=').decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel
