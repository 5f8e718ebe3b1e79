"""The documentation site in docs/: it builds with warnings as errors, its configuration
reference has every setting (generated from the settings classes), its CLI reference
every command, and its troubleshooting guide every error class."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import zexec_docs  # noqa: E402 - docs/_ext, the Sphinx extension

import zexec.core.errors as errors  # noqa: E402

CLASSES = zexec_docs.settings_classes()


def test_every_settings_class_and_command_has_its_table():
    config = (DOCS / "configuration.md").read_text()
    cli = (DOCS / "cli.md").read_text()
    missing = [name for name in CLASSES if f"```{{zexec-settings}} {name}\n" not in config]
    assert not missing, f"docs/configuration.md lacks {missing}"
    missing = [cmd for cmd in zexec_docs.commands() if f"```{{zexec-cli}} {cmd}\n" not in cli]
    assert not missing, f"docs/cli.md lacks {missing}"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_setting_has_a_row_with_type_default_and_meaning(name):
    cls = CLASSES[name]
    rows = zexec_docs.settings_rows(cls)
    prefix = cls.model_config["env_prefix"]
    assert [r[0] for r in rows] == [f"{prefix}{f.upper()}" for f in cls.model_fields]
    assert all(r[1] and r[2] and r[3] for r in rows), [r for r in rows if not all(r)]


def test_every_variable_the_code_reads_is_a_documented_setting():
    known = {f"{cls.model_config['env_prefix']}{f.upper()}"
             for cls in CLASSES.values() for f in cls.model_fields}
    named = set()
    for path in (ROOT / "src" / "zexec").rglob("*.py"):
        named |= set(re.findall(r'"(ZEXEC_[A-Z0-9_]*[A-Z0-9])"', path.read_text()))
    assert named - known == set(), "ZEXEC_* names in the code that no settings class has"


def test_every_error_class_is_in_the_troubleshooting_guide():
    guide = (DOCS / "troubleshooting.md").read_text()
    classes = [name for name, obj in vars(errors).items()
               if isinstance(obj, type) and issubclass(obj, errors.ZexecError)]
    missing = [name for name in classes if f"### `{name}`\n" not in guide]
    assert not missing, f"docs/troubleshooting.md has no section for {missing}"


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = (out / "configuration.html").read_text()
    for cls in CLASSES.values():
        for var, *_ in zexec_docs.settings_rows(cls):
            assert var in config, var
    assert "usage: zexec up" in (out / "cli.html").read_text()
    api = (out / "api.html").read_text()
    for name in ("zexec.connect", "zexec.RemoteFunction", "zexec.Client", "zexec.debug"):
        assert f'id="{name}"' in api, name
