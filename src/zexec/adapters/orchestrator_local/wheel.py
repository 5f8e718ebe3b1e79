"""A wheel of the zexec this process runs, for the users' environments.

Each user's server runs ``python -m zexec.apps.server`` inside the user's own virtual
environment, so that environment needs zexec itself, and exactly the zexec of the
running stack (the server speaks the broker's protocol). No package index can be
trusted to have it: a development checkout, a pre-release, a wheel the site built. So
the stack makes a wheel from the files it runs (the installed package directory, or the
source tree of an editable install) and the installed distribution's metadata (its
dependencies, entry points, licenses), without a build backend or a network: it is a
zip. The wheel is cached by the hash of its contents (``<cache>/<hash>/zexec-...whl``):
built once, and a change of the code (an upgrade, an edited checkout) makes a new one,
which the environments' markers notice (they are rebuilt).

Why not the alternatives: ``-e <checkout>`` only exists for editable installs and lets a
user's environment run code that changes under it; ``zexec==<version>`` from an index
fails for anything unreleased (and for every version today); the wheel a user installed
from is not kept anywhere we could find it again.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

#: The package directory this module belongs to (``.../zexec``).
PACKAGE_DIR = Path(__file__).resolve().parents[2]
#: Files of the package directory left out of the wheel.
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".orig", ".rej")


@dataclass(frozen=True)
class DistInfo:
    """What goes into the wheel's ``.dist-info``: ``METADATA`` text, ``entry_points.txt``
    text (may be empty) and license files (``{name: bytes}``)."""

    name: str
    version: str
    metadata: str
    entry_points: str = ""
    licenses: tuple[tuple[str, bytes], ...] = ()


def running_dist_info(package_dir: Path = PACKAGE_DIR) -> DistInfo:
    """The metadata of the running zexec: the installed distribution's (regular or
    editable install), else (a source tree on ``sys.path``, not installed) made from the
    ``pyproject.toml`` beside ``src/``."""
    found = list(metadata.distributions(name="zexec"))
    if not found:
        return _from_pyproject(package_dir.parents[1] / "pyproject.toml")
    # The installed .dist-info (pip, uv; editable installs too) over an .egg-info that a
    # source tree on sys.path may hold (a build in place left it; it has PKG-INFO only).
    dist = next((d for d in found if d.read_text("METADATA")), found[0])
    licenses = []
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if len(parts) >= 3 and parts[0].endswith(".dist-info") and parts[1] == "licenses":
            data = f.locate().read_bytes() if Path(f.locate()).is_file() else None
            if data is not None:
                licenses.append(("/".join(parts[2:]), data))
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    return DistInfo(dist.metadata["Name"], dist.version, text,
                    dist.read_text("entry_points.txt") or "", tuple(sorted(licenses)))


def _from_pyproject(path: Path) -> DistInfo:
    try:
        project = tomllib.loads(path.read_text("utf-8"))["project"]
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeError(
            f"zexec is neither installed nor run from its source tree ({path}: {exc}); "
            "install it (pip install zexec) so its servers' environments can get it"
        ) from None
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}",
             f"Version: {project['version']}",
             f"Requires-Python: {project.get('requires-python', '>=3.11')}"]
    lines += [f"Requires-Dist: {req}" for req in project.get("dependencies", [])]
    groups = ((group, entries) for group, entries in
              project.get("entry-points", {}).items())
    eps = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
                  for group, entries in groups)
    return DistInfo(project["name"], project["version"], "\n".join(lines) + "\n", eps)


def package_files(package_dir: Path) -> list[tuple[str, Path]]:
    """``(path in the wheel, file)`` of every file of the package, sorted."""
    out = []
    root = package_dir.parent
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(dirpath) / name
            out.append((path.relative_to(root).as_posix(), path))
    return out


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _strip_missing_licenses(text: str, licenses: dict[str, bytes]) -> str:
    """``License-File`` lines must name files in the wheel: drop the others."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("License-File:")
                   or line.split(":", 1)[1].strip() in licenses)


def build_wheel(cache: Path, package_dir: Path = PACKAGE_DIR,
                info: DistInfo | None = None) -> Path:
    """The wheel of ``package_dir`` with ``info``'s metadata, built into
    ``cache/<content hash>/`` unless it is there already; returns its path."""
    info = info or running_dist_info(package_dir)
    files = [(arc, path.read_bytes()) for arc, path in package_files(package_dir)]
    licenses = dict(info.licenses)
    meta = _strip_missing_licenses(info.metadata, licenses)
    h = hashlib.sha256()
    hashed = [*files, ("METADATA", meta.encode()), ("entry_points", info.entry_points.encode()),
              *((f"license/{k}", v) for k, v in sorted(licenses.items()))]
    for arc, data in hashed:
        h.update(arc.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    name = re.sub(r"[-_.]+", "_", info.name).lower()
    version = info.version.replace("-", "_")
    target = cache / h.hexdigest()[:16] / f"{name}-{version}-py3-none-any.whl"
    if target.is_file():
        return target
    dist_info = f"{name}-{version}.dist-info"
    wheel_file = ("Wheel-Version: 1.0\nGenerator: zexec (the running installation)\n"
                  "Root-Is-Purelib: true\nTag: py3-none-any\n")
    entries = [*files, (f"{dist_info}/METADATA", meta.encode()),
               (f"{dist_info}/WHEEL", wheel_file.encode())]
    if info.entry_points:
        entries.append((f"{dist_info}/entry_points.txt", info.entry_points.encode()))
    entries += [(f"{dist_info}/licenses/{k}", v) for k, v in sorted(licenses.items())]
    record = "".join(f"{arc},{_record_hash(data)},{len(data)}\n" for arc, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
            for arc, data in [*entries, (f"{dist_info}/RECORD", record.encode())]:
                # A fixed timestamp: the same contents give the same bytes.
                entry = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
                entry.external_attr = 0o644 << 16
                z.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)  # concurrent builders write the same bytes
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
