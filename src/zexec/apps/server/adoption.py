"""Warm-pool mode: a server started before its user is known asks for it.

A pool pod's server (``ZEXEC_SERVER_POOL_URL`` set, no user id or credential) has its
environment built and its first worker starting; it then long-polls the Deploy API's
``POST {prefix}/pool/bind`` until a spawn adopts the pod, and runs as that user from
then on (registers with the broker, touches the ready file). Only the standard library:
the server runs in the user's environment, which has zexec's base dependencies only.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from zexec.core.errors import ConfigurationError
from zexec.settings import ServerSettings

log = logging.getLogger("zexec.server")

#: Seconds one binding request may be held open by the Deploy API.
POLL_WAIT = 20.0
#: Seconds between attempts while the Deploy API cannot be reached (restarting).
RETRY = 1.0


def await_binding(url: str, pod: str, key: str, *, wait: float = POLL_WAIT,
                  retry: float = RETRY, opener: Callable[..., Any] = urllib.request.urlopen
                  ) -> tuple[str, str]:
    """``(user id, credential)`` of the user who adopts pool pod ``pod``, asked of the
    Deploy API at ``url`` until one does. A refusal (403: wrong key, not a pool pod, or
    already bound) is a ConfigurationError: the pod's server must stop, not retry."""
    body = json.dumps({"pod": pod, "wait": wait}).encode()
    while True:
        request = urllib.request.Request(
            url.rstrip("/") + "/pool/bind", data=body, method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            with opener(request, timeout=wait + 30) as response:
                if response.status == 204:
                    continue
                answer = json.loads(response.read())
                return str(answer["user_id"]), str(answer["credential"])
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:
                detail = exc.read().decode(errors="replace")[:500]
                raise ConfigurationError(
                    f"the Deploy API refused this pool pod's binding: {exc.code} {detail}"
                ) from None
            log.warning("pool binding: Deploy API answered %s; retrying", exc.code)
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            log.warning("pool binding: %s; retrying", exc)
        time.sleep(retry)


def announce_registered(url: str, pod: str, key: str, ready_file: str, *,
                        timeout: float = 300.0,
                        opener: Callable[..., Any] = urllib.request.urlopen) -> bool:
    """Once ``ready_file`` exists (the broker accepted the registration), tell the
    Deploy API, so the user's status is ready without waiting for the pod's readiness
    probe (up to a second later). Best effort: the probe says it anyway."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(ready_file):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    request = urllib.request.Request(
        url.rstrip("/") + "/pool/registered", data=json.dumps({"pod": pod}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with opener(request, timeout=30):
            return True
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("pool: could not say the server registered: %s", exc)
        return False


def bound(settings: ServerSettings) -> ServerSettings:
    """``settings`` with the adopting user's id and credential when they are pool-mode
    settings (no user id, a pool URL), waiting for the adoption; else as they are."""
    if settings.user_id or not settings.pool_url:
        return settings
    if not settings.pool_pod or not settings.pool_key.get_secret_value():
        raise ConfigurationError("pool mode (ZEXEC_SERVER_POOL_URL) needs "
                                 "ZEXEC_SERVER_POOL_POD and ZEXEC_SERVER_POOL_KEY")
    log.info("warm pool: pod %s waits to be adopted", settings.pool_pod)
    user_id, credential = await_binding(settings.pool_url, settings.pool_pod,
                                        settings.pool_key.get_secret_value())
    log.info("warm pool: adopted by %s", user_id)
    if settings.ready_file:
        threading.Thread(target=announce_registered, name="zexec-pool-registered",
                         args=(settings.pool_url, settings.pool_pod,
                               settings.pool_key.get_secret_value(), settings.ready_file),
                         daemon=True).start()
    return settings.model_copy(update={"user_id": user_id,
                                       "credential": SecretStr(credential),
                                       "pool_key": SecretStr("")})
