"""What the SDK sends the Deploy API and how it reads the answers: the requirement list
of ``environment()`` and every HTTP status turned into the zexec error it stands for
(401 Unauthenticated, 409 EnvironmentConflict naming ``force=True``, 422
InvalidEnvironment or ResourceLimitExceeded, a failed build EnvironmentFailed with the
log)."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import httpx

from zexec.core import errors as E

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def detail_of(resp: httpx.Response) -> tuple[str, dict[str, Any]]:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason_phrase, {}
    if not isinstance(body, dict):
        return str(body)[:300], {}
    detail = body.get("detail")
    return (detail if isinstance(detail, str) else str(detail or resp.reason_phrase)), body


def check(resp: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON body of a 2xx answer; otherwise the zexec error the status stands for."""
    if resp.is_success:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise E.ControlPlaneError(
                f"{what}: {resp.url} answered something that is not a "
                "JSON object (is this URL a zexec/NDP endpoint?)"
            )
        return body
    detail, body = detail_of(resp)
    code = resp.status_code
    if code == 401:
        raise E.Unauthenticated(f"{what}: {detail} (check the token)")
    if code == 403:
        raise E.Forbidden(f"{what}: {detail}")
    if code == 409:
        raise E.EnvironmentConflict(
            f"{detail}\nTo replace your server (interrupting its work) call "
            "environment(..., force=True)."
        )
    if code == 422 and body.get("code") == E.ResourceLimitExceeded.code:
        raise E.ResourceLimitExceeded(detail)
    if code == 422 and body.get("phase") == "failed":
        raise E.EnvironmentFailed(detail, body.get("reason", ""), tuple(body.get("log_tail", ())))
    if code == 422:
        raise E.InvalidEnvironment(detail)
    if code == 503 and body.get("code") == "AUTH_UNAVAILABLE":
        raise E.AuthUnavailable(f"{what}: {detail}")
    raise E.ControlPlaneError(f"{what}: {resp.request.method} {resp.url} -> HTTP {code}: {detail}")


def requirement_list(
    requirements: list[str] | tuple[str, ...] | str | os.PathLike | None, python: str | None
) -> list[str]:
    """The requirement items to send: a list as given, or a requirements file's lines;
    ``python==X.Y`` added (``python`` or this interpreter's) unless one is there."""
    from zexec.core.envspec import read_requirements_file

    if requirements is None:
        items: list[str] = []
    elif isinstance(requirements, str | os.PathLike):
        path = os.fspath(requirements)
        if not os.path.isfile(path):
            raise E.ConfigurationError(
                f"requirements file {path!r} not found (pass a list such as ['numpy'] for "
                "requirement strings)"
            )
        items = read_requirements_file(path)
    elif isinstance(requirements, list | tuple) and all(isinstance(r, str) for r in requirements):
        items = list(requirements)
    else:
        raise E.ConfigurationError("requirements must be a list of strings or a file path")
    # Only the name is looked at here (a regular expression, not packaging's parser,
    # which takes longer to import than the rest of connect()); the Deploy API checks
    # every item and says what is wrong with one (422).
    pins = [item.strip() for item in items if _requirement_name(item) == "python"]
    if pins and python is not None and pins != [f"python=={python}"]:
        raise E.ConfigurationError(
            f"python={python!r} and the requirement {pins[0]!r} "
            "disagree; pin the Python version once"
        )
    return items if pins else [f"python=={python or PYTHON}", *items]


_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def _requirement_name(item: str) -> str:
    """The normalized project name a requirement string starts with ("" if none)."""
    m = _NAME.match(item)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else ""
