"""The names of zexec's settings: every ``ZEXEC_*`` name the code uses is a field of a
settings class (so ``zexec up``'s warning about unknown names never flags a real one),
and an unknown name gets the nearest known one as a suggestion."""

from __future__ import annotations

import re
from pathlib import Path

import zexec
from zexec.apps.cli.plan import CLIENT_SETTINGS, unknown_settings
from zexec.settings import ClientSettings, setting_names

SRC = Path(zexec.__file__).parent
NAME = re.compile(r"[\"'](ZEXEC_[A-Z0-9_]*[A-Z0-9])[\"']")  # whole names, not prefixes


def test_every_name_the_code_uses_is_a_setting():
    used = {m.group(1): path for path in SRC.rglob("*.py")
            for m in NAME.finditer(path.read_text())}
    assert len(used) > 30  # the scan sees the code
    unknown = {name: str(path.relative_to(SRC)) for name, path in used.items()
               if name not in setting_names()}
    assert unknown == {}


def test_the_sdks_own_names_are_client_settings():
    client = {f"ZEXEC_{f}".upper() for f in ClientSettings.model_fields}
    assert CLIENT_SETTINGS <= client


def test_unknown_names_get_the_nearest_known_one():
    got = unknown_settings(["ZEXEC_DEPLOY_MAX_CPU", "ZEXEC_BROKR_HOST", "ZEXEC_E2E_IMAGES",
                            "ZEXEC_DEPLOY_MAX_CPUS", "ZEXEC_LOG_FILE"])
    assert got == {"ZEXEC_DEPLOY_MAX_CPU": "ZEXEC_DEPLOY_MAX_CPUS",
                   "ZEXEC_BROKR_HOST": "ZEXEC_BROKER_HOST", "ZEXEC_E2E_IMAGES": None}
