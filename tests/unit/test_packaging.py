"""What ``pip install zexec`` / ``zexec[server]`` get: the built wheel's metadata, extras
and package data; the wheel of the running installation the stack gives users' envs."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers.packaging import REPO, built_wheel, wheel_metadata
from zexec.adapters.orchestrator_local.wheel import DistInfo, build_wheel, package_files
from zexec.apps.extras import SERVER_MODULES, install_hint, missing_extra

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: What only the stack's components use: never a dependency of the client SDK.
SERVER_ONLY = {"fastapi", "uvicorn", "python-multipart", "prometheus-client", "kubernetes",
               "pyjwt", "cryptography", "dependency-injector", "uv"}


def _requires(meta) -> dict[str, set[str]]:
    """``{extra or "": {distribution names}}`` from METADATA's Requires-Dist lines."""
    out: dict[str, set[str]] = {}
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        extra = ""
        if req.marker is not None:
            extra = str(req.marker).split("==")[-1].strip().strip('"')
        out.setdefault(extra, set()).add(req.name.lower())
    return out


@pytest.fixture(scope="module")
def wheel():
    return built_wheel()


def test_metadata_is_complete(wheel):
    _, meta = wheel_metadata(wheel)
    assert meta["Name"] == "zexec" and meta["Version"] == PYPROJECT["version"]
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "Two commands on a fresh machine" in meta.get_payload()  # the README
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls)
    classifiers = meta.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert any(c.startswith("Development Status") for c in classifiers)


def test_extras_client_is_light_and_server_brings_everything_up_needs(wheel):
    _, meta = wheel_metadata(wheel)
    req = _requires(meta)
    assert not req[""] & SERVER_ONLY, "the client SDK must not depend on server parts"
    assert {"pyzmq", "cloudpickle", "dill", "httpx", "pydantic-settings"} <= req[""]
    assert req["server"] == SERVER_ONLY
    assert req["api"] == {"zexec"}  # the old name: zexec[server]
    assert "zexec" in req["dev"] and "twine" in req["dev"]


def test_package_data_ships(wheel):
    names, _ = wheel_metadata(wheel)
    data = [p.relative_to(REPO / "src").as_posix()
            for p in (REPO / "src" / "zexec").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "zexec/adapters/catalog_sqlite/sample_datasets.json" in data
    assert "zexec/py.typed" in data
    assert not [d for d in data if d not in names]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/"))]


def test_twine_check_passes(wheel):
    twine = Path(sys.executable).with_name("twine")
    done = subprocess.run([str(twine), "check", "--strict", str(wheel)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_server_modules_match_the_server_extra():
    extra = {Requirement(r).name.lower() for r in PYPROJECT["optional-dependencies"]["server"]}
    assert set(SERVER_MODULES.values()) == extra


def test_missing_extra_names_the_pip_command():
    exc = ModuleNotFoundError("No module named 'fastapi'", name="fastapi")
    msg = str(missing_extra(exc, "zexec up"))
    assert "zexec up needs zexec's server extra (fastapi not installed)" in msg
    assert "pip install 'zexec[server]'" in msg and sys.executable in msg
    assert missing_extra(ModuleNotFoundError("x", name="numpy"), "zexec up") is None
    assert "python-multipart" in install_hint(["multipart"], "x")


# ---------------------------------------------------------------- the running installation


def _fake_package(root: Path) -> Path:
    pkg = root / "src" / "zexec"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("VERSION = 1\n")
    (pkg / "sub" / "data.json").write_text("{}")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (pkg / ".hidden").write_text("no")
    return pkg


INFO = DistInfo("zexec", "1.2.3", "Metadata-Version: 2.4\nName: zexec\nVersion: 1.2.3\n"
                "License-File: LICENSE\nLicense-File: GONE\nRequires-Dist: pyzmq>=26\n",
                "[zexec]\nserializers = zexec.adapters.serializer.plugin\n",
                (("LICENSE", b"BSD"),))


def test_running_wheel_holds_the_package_and_metadata(tmp_path):
    pkg = _fake_package(tmp_path)
    assert [a for a, _ in package_files(pkg)] == ["zexec/__init__.py", "zexec/sub/data.json"]
    wheel = build_wheel(tmp_path / "cache", pkg, INFO)
    assert wheel.name == "zexec-1.2.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read("zexec-1.2.3.dist-info/METADATA").decode()
        record = z.read("zexec-1.2.3.dist-info/RECORD").decode()
    assert {"zexec/__init__.py", "zexec/sub/data.json", "zexec-1.2.3.dist-info/WHEEL",
            "zexec-1.2.3.dist-info/entry_points.txt",
            "zexec-1.2.3.dist-info/licenses/LICENSE"} <= names
    assert not [n for n in names if "__pycache__" in n or ".hidden" in n]
    assert "License-File: LICENSE" in meta and "GONE" not in meta
    assert all(n in record for n in names)


def test_running_wheel_is_cached_by_content(tmp_path):
    pkg = _fake_package(tmp_path)
    first = build_wheel(tmp_path / "cache", pkg, INFO)
    stamp = first.stat().st_mtime_ns
    assert build_wheel(tmp_path / "cache", pkg, INFO) == first
    assert first.stat().st_mtime_ns == stamp  # not written again
    (pkg / "__init__.py").write_text("VERSION = 2\n")
    second = build_wheel(tmp_path / "cache", pkg, INFO)
    assert second != first and second.name == first.name  # a new hash directory


def test_running_wheel_of_this_checkout_installs_entry_points(tmp_path):
    wheel = build_wheel(tmp_path)  # the zexec running these tests (an editable install)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        eps = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "zexec/apps/server/__main__.py" in names
    assert "zexec/adapters/catalog_sqlite/sample_datasets.json" in names
    assert "serializers = zexec.adapters.serializer.plugin" in eps


def test_image_builds_copy_every_file_pyproject_names():
    names = {PYPROJECT["readme"], *PYPROJECT["license-files"], "pyproject.toml"}
    for image in ("Dockerfile", "Dockerfile.server"):
        text = (REPO / "deploy" / "docker" / image).read_text()
        copied = {f for line in text.splitlines() if line.startswith("COPY pyproject.toml")
                  for f in line.split()[1:-1]}
        assert names <= copied, image
        ignore = (REPO / "deploy" / "docker" / f"{image}.dockerignore").read_text().split()
        assert all(f"!{n}" in ignore for n in names), image
