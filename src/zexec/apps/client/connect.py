"""``zexec.connect``: from an EP API URL and a token to a ready server.

    conn = zexec.connect("http://ep.example.org", token)
    conn.environment(["numpy"])          # python==<this interpreter> is added
    @zexec.remote
    def f(x): ...
    conn.terminate()

Discovery follows the released ``ndp-ep`` client: ``GET {ep}/status/rexec`` names the
Deploy API (``/rexec`` appended unless the URL ends with it), ``GET
{deploy}/broker-config`` the broker. ``environment`` POSTs JSON to ``{deploy}/spawn``
and polls ``GET {deploy}/status`` until the server is ready, with a progress display
(:mod:`zexec.apps.client.progress`). Every HTTP failure becomes a zexec error whose
message says what to do (401 Unauthenticated, 409 EnvironmentConflict naming
``force=True``, 422 InvalidEnvironment, a failed build EnvironmentFailed with the log).
"""

from __future__ import annotations

import os
import time
from typing import Any

# At module level: this module loads only when ``zexec.connect`` (or another name of
# it) is first used (``zexec``'s exports are lazy), so servers and workers never pay
# for httpx, and a user's connect() does not pay for the import either.
import httpx

from zexec.apps.client.api import Client, set_default_client
from zexec.apps.client.deploy_calls import PYTHON, check, detail_of, requirement_list
from zexec.apps.client.output import Writer
from zexec.apps.client.privacy import is_loopback, privacy
from zexec.apps.client.progress import Progress
from zexec.apps.client.status import Status
from zexec.apps.client.tracebacks import public
from zexec.core import errors as E
from zexec.notebook.html import connection_html, status_line

PREFIX = "/rexec"
#: ``environment()`` asks for the server's status every FAST_POLL seconds for the first
#: FAST_WINDOW seconds (a server whose environment is cached is ready within about a
#: second; a late look adds straight to the time to the first result), then every
#: ``poll`` seconds (a build takes longer, and the Deploy API has other users).
FAST_POLL = 0.05
FAST_WINDOW = 3.0
_default: Connection | None = None



def deploy_url_from(url: str, prefix: str = PREFIX) -> str:
    """The Deploy API base the EP API reports, with ``prefix`` appended unless present
    (what ndp-ep 0.9.0 does)."""
    url = url.strip().rstrip("/")
    return url if url.endswith(prefix) else url + prefix


def poll_interval(elapsed: float, poll: float) -> float:
    """Seconds to wait before the next status request, ``elapsed`` seconds into
    ``environment()``: FAST_POLL at first (a cached environment is ready in well under a
    second), ``poll`` after FAST_WINDOW."""
    return min(poll, FAST_POLL) if elapsed < FAST_WINDOW else poll


class Connection:
    """A user's link to one zexec deployment: ``client`` (a :class:`zexec.Client` to the
    broker, the default for ``@zexec.remote``), plus ``environment``, ``status`` and
    ``terminate`` of the user's server through the Deploy API. Made by :func:`connect`."""

    def __init__(
        self,
        ep_api_url: str,
        token: str,
        deploy_url: str,
        broker_url: str,
        client: Client,
        http: httpx.Client,
        user: dict[str, Any] | None = None,
    ) -> None:
        self.ep_api_url = ep_api_url
        self.deploy_url = deploy_url
        self.broker_url = broker_url
        self.client = client
        self.user = user or {}
        #: The server status this connection saw last (``environment()``, ``status()``).
        self.last_status: Status | None = None
        #: What the last environment() asked for: the next call starts it again if the
        #: server stops for idleness.
        self._revive_body: dict[str, Any] = {}
        self._token = token
        self._http = http

    @property
    def username(self) -> str:
        """Who this connection is (the identity provider's user name)."""
        return str(self.user.get("username") or self.user.get("sub") or "?")

    def __repr__(self) -> str:
        lock = privacy(self.client.broker, self.client.encrypted).replace("plain", "not encrypted")
        server = status_line(self.last_status) if self.last_status else "server not asked yet"
        return f"<zexec.Connection {self.username} @ {self.broker_url} ({lock}); {server}>"

    def _repr_html_(self) -> str:
        """The connection, with the server's current status (asked now, 2 s at most)."""
        try:
            st, error = self.status(timeout=2.0), ""
        except E.ZexecError as exc:
            st, error = None, str(exc)
        return connection_html(self.username, self.broker_url, self.client.encrypted,
                               self.deploy_url, st, error)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def _request(self, method: str, path: str, what: str, **kw: Any) -> httpx.Response:
        url = self.deploy_url + path
        try:
            return self._http.request(method, url, headers=self._auth(), **kw)
        except httpx.HTTPError as exc:
            raise E.ControlPlaneError(
                f"{what}: cannot reach the Deploy API at {url}: {exc}"
            ) from None

    @public
    def environment(
        self,
        requirements: list[str] | str | os.PathLike | None = None,
        python: str | None = None,
        force: bool = False,
        timeout: float = 600.0,
        progress: bool = True,
        poll: float = 0.5,
        *,
        cpus: float | None = None,
        memory: int | None = None,
        gpus: int | None = None,
        workers: int | None = None,
    ) -> dict[str, Any]:
        """Make sure your server runs ``requirements`` (a list, or a requirements file
        path) under ``python`` (default: this interpreter's ``X.Y``), waiting up to
        ``timeout`` seconds for it to be ready. The same environment again returns at
        once; another one raises EnvironmentConflict unless ``force=True``, which
        replaces the server: the new environment is built beside your running server,
        which keeps serving until the new one is ready (and goes on if the build fails).
        Returns the server's status (``phase`` is ``"ready"``). While waiting it asks for
        the status every 50 ms for the first 3 s, then every ``poll`` seconds. Ctrl-C
        (KeyboardInterrupt) while waiting asks the Deploy API to cancel the build.

        Resources of the server (None: the site's default): ``cpus`` cores (a float,
        like Ray's ``num_cpus``), ``memory`` in MiB (an int, like Modal's: 4096 is
        4 GiB), ``gpus``, ``workers`` (worker processes: calls run this many at a
        time). Other resources are another server (EnvironmentConflict unless
        ``force``), with the same installed environment. Beyond the site's limits:
        ResourceLimitExceeded, naming the limit; ``status()["resources"]`` says what
        the server got and what of it is not enforced there.

        A server that later stops for being idle (the site's idle timeout) is started
        again, with this environment, by the next call that finds it gone (a line on
        stderr says so); after :meth:`terminate` calls fail until the next
        ``environment()``."""
        body: dict[str, Any] = {"requirements": requirement_list(requirements, python),
                                "force": bool(force)}
        asked = {"cpus": cpus, "memory": memory, "gpus": gpus, "workers": workers}
        body.update({k: v for k, v in asked.items() if v is not None})
        st = self._spawn(body, timeout, progress, poll)
        # A server that stops for idleness is started again by the next call (revival.py).
        self._revive_body = {**body, "force": False}
        self.client._session.revival.hook = self._revive
        return st

    def _spawn(self, body: dict[str, Any], timeout: float, progress: bool,
               poll: float) -> Status:
        """POST ``/spawn`` and wait until the server is ready (see :meth:`environment`)."""
        display = Progress(enabled=progress)
        started = time.monotonic()
        st: dict[str, Any] = {}
        try:
            st = check(self._request("POST", "/spawn", "spawn", json=body), "spawn")
            while True:
                phase = st.get("phase")
                if phase == "ready":
                    display.close(f"ready ({time.monotonic() - started:.1f}s)")
                    self.last_status = Status(st)
                    return self.last_status
                if phase in ("failed", "terminated"):
                    display.close(phase)
                    reason = st.get("reason") or "see the log"
                    raise E.EnvironmentFailed(
                        f"your server {phase}: {reason}", reason, tuple(st.get("log_tail") or ())
                    )
                if time.monotonic() - started > timeout:
                    display.close(f"still {phase} after {timeout:g}s")
                    raise E.EnvironmentTimeout(
                        f"your server was not ready after {timeout:g}s (phase {phase}); "
                        "call environment() again to keep waiting",
                        "",
                        tuple(st.get("log_tail") or ()),
                    )
                display.update(st)
                time.sleep(poll_interval(time.monotonic() - started, poll))
                resp = self._request("GET", "/status", "status")
                if resp.status_code == 404:
                    display.close("gone")
                    raise E.EnvironmentFailed(
                        "your server disappeared while starting (terminated meanwhile?)"
                    )
                st = check(resp, "status")
        except KeyboardInterrupt:
            display.close(self._cancel_build(st))
            raise
        finally:
            display.close()

    def _cancel_build(self, st: dict[str, Any]) -> str:
        """After Ctrl-C in :meth:`environment`: ask the Deploy API to stop the build (of
        the environment asked for, when known); returns what happened, in a few words."""
        if st.get("phase") in ("ready", "failed", "terminated"):
            return "interrupted"
        digest = (st.get("env") or {}).get("digest")
        try:
            resp = self._request("POST", "/cancel", "cancel",
                                 json={"digest": digest} if digest else {})
            done = check(resp, "cancel")
        except E.ZexecError as exc:
            return f"interrupted; the build could not be cancelled ({exc})"
        if not done.get("cancelled"):
            return "interrupted (no build was under way)"
        if done.get("status"):
            return "interrupted: build cancelled, your previous server keeps serving"
        return "interrupted: build cancelled"

    @public
    def status(self, timeout: float | None = None) -> Status | None:
        """Your server's status (phase, reason, log tail, environment: a
        :class:`~zexec.apps.client.status.Status`), None if you have none. ``timeout``
        bounds the request (default: the connection's)."""
        kw = {} if timeout is None else {"timeout": timeout}
        resp = self._request("GET", "/status", "status", **kw)
        self.last_status = None if resp.status_code == 404 else Status(check(resp, "status"))
        return self.last_status

    def _revive(self, write: Writer | None) -> None:
        """Start the server :meth:`environment` made again, when it stopped for being
        idle (the hook of :mod:`zexec.apps.client.revival`); raises in any other case."""
        st = self.status(timeout=30.0)
        phase, reason = (st or {}).get("phase"), (st or {}).get("reason")
        if phase == "ready":
            return  # started again meanwhile (another process of the same user)
        if phase != "terminated" or reason != "idle":  # not ours to start again
            raise E.ServerUnavailable(
                f"no server is running for you: it {'is gone' if st is None else phase}"
                + (f" ({reason})" if reason else "") + "; start one with environment(...)")
        if write is not None:
            write("stderr", "zexec: your server had stopped after being idle; "
                            "starting the same environment again\n")
        self._spawn(self._revive_body, 600.0, False, 0.5)

    @public
    def terminate(self) -> dict[str, Any]:
        """Stop and remove your server (``terminated`` says whether one was running).
        Calls after it fail (ServerUnavailable) until the next :meth:`environment`."""
        self.client._session.revival.hook = None
        return check(self._request("DELETE", "/terminate", "terminate"), "terminate")

    def close(self) -> None:
        """Close the broker connection and the HTTP client."""
        global _default
        self.client.close()
        self._http.close()
        if _default is self:
            _default = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def broker_address(cfg: dict[str, Any], encrypt: bool | None) -> tuple[str, str | None]:
    """``(broker URL, TLS pin)`` from a ``/broker-config`` answer.

    ``encrypt=None`` (the default): the encrypted port when the broker offers one,
    except for a broker on this machine's loopback interface, where bytes never leave
    the kernel and only root could read them (docs/security.md): there the plain port
    is as private and skips the encryption's cost. ``True``: always encrypted (an error
    if the broker offers no encrypted port); ``False``: always plain."""
    host, port = cfg.get("broker_external_host"), cfg.get("broker_external_port")
    pin, secure = cfg.get("broker_tls_sha256"), cfg.get("broker_external_secure_port")
    offered = bool(pin and secure)
    if encrypt and not offered:
        raise E.ConfigurationError(
            "connect(encrypt=True): this broker offers no encrypted port (its operator "
            "sets ZEXEC_BROKER_TLS_CERT_FILE and the Deploy API's "
            "ZEXEC_DEPLOY_BROKER_TLS_CERT_FILE)")
    if offered and (encrypt or encrypt is None and not is_loopback(str(host))):
        return f"tls://{host}:{secure}", str(pin)
    return f"tcp://{host}:{port}", None


@public
def connect(
    ep_api_url: str, token: str, *, timeout: float = 30.0, encrypt: bool | None = None,
    **client_options: Any,
) -> Connection:
    """Discover the Deploy API and the broker from the EP API at ``ep_api_url`` and
    return a :class:`Connection` whose client is the default of ``@zexec.remote``.
    ``timeout`` bounds each HTTP request; ``encrypt`` chooses the broker's encrypted
    (TLS) port: by default whenever the broker offers one and is not on this machine's
    loopback, ``True`` always, ``False`` never (see :func:`broker_address`);
    ``client_options`` go to :class:`zexec.Client` (``serializer``, ``connect_timeout``
    ...). The token is checked now (``/user/info``) so a wrong one fails here, not at
    the first call."""
    global _default
    if not token:
        raise E.ConfigurationError("connect() needs your token")
    ep = ep_api_url.strip().rstrip("/")
    if ep.startswith("tcp://"):
        raise E.ConfigurationError(
            f"{ep!r} is a broker address; connect() takes the EP API's http(s) URL (it "
            f"finds the broker), or use zexec.Client({ep!r}, token) to talk to the broker only"
        )
    if not ep.startswith(("http://", "https://")):
        raise E.ConfigurationError(f"the EP API URL must start with http:// or https://: {ep!r}")
    # Certificates are loaded only for an https:// EP API (loading them costs ~60 ms);
    # a Deploy API it names on https:// gets a verifying client of its own below.
    http = httpx.Client(timeout=timeout, verify=ep.startswith("https://"))
    auth = {"Authorization": f"Bearer {token}"}

    def get(url: str, what: str, **kw: Any) -> httpx.Response:
        try:
            return http.get(url, **kw)
        except httpx.HTTPError as exc:
            raise E.ControlPlaneError(f"{what}: cannot reach {url}: {exc}") from None

    try:
        resp = get(f"{ep}/status/rexec", "discovery", headers=auth)
        if resp.status_code == 404:
            raise E.ControlPlaneError(_not_an_ep_api(http, ep) or (
                f"remote execution is not enabled at {ep}: {detail_of(resp)[0]}"))
        found = check(resp, "discovery").get("deployment_api_url")
        if not isinstance(found, str) or not found:
            raise E.ControlPlaneError(f"{ep}/status/rexec did not name a deployment_api_url")
        deploy = deploy_url_from(found)
        if deploy.startswith("https://") and not ep.startswith("https://"):
            http.close()
            http = httpx.Client(timeout=timeout)  # verifies certificates
        user = check(get(f"{ep}/user/info", "user info", headers=auth), "user info")
        cfg = check(get(f"{deploy}/broker-config", "broker-config"), "broker-config")
        if not cfg.get("broker_external_host") or not cfg.get("broker_external_port"):
            raise E.ControlPlaneError(f"{deploy}/broker-config did not name the broker")
        broker, pin = broker_address(cfg, encrypt)
        if pin:
            client_options.setdefault("tls_pin", pin)
        client = Client(broker, token, **client_options)
    except BaseException:
        http.close()
        raise
    # Usually environment() comes next and waits for the server: connect to the broker
    # and let it check the token meanwhile.
    client.warm()
    # The newest connection is the default; earlier ones keep working when used
    # explicitly (two users in one process, e.g. tests).
    set_default_client(client)
    _default = Connection(ep, token, deploy, broker, client, http, user)
    return _default


def _not_an_ep_api(http: httpx.Client, url: str) -> str | None:
    """When ``url`` is a Deploy API rather than an EP API (its ``/broker-config``
    answers), the message that says so and which URL to pass instead."""
    for base in (url, deploy_url_from(url)):
        try:
            resp = http.get(f"{base}/broker-config")
            body = resp.json() if resp.is_success else None
        except Exception:  # a courtesy probe: any failure leaves the plain 404 message
            continue
        if isinstance(body, dict) and "broker_external_host" in body:
            return (
                f"{url} is a Deploy API, not an EP API: connect() takes the EP API's URL, "
                "whose /status/rexec names this Deploy API (with zexec up: ep_api_url in "
                "stack.json, the 'EP API' line it prints)"
            )
    return None


def default_connection() -> Connection:
    if _default is None:
        raise E.ConfigurationError("not connected: call zexec.connect(ep_api_url, token) first")
    return _default


@public
def environment(
    requirements: list[str] | str | os.PathLike | None = None,
    python: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:meth:`Connection.environment` of the last :func:`connect` (the same options:
    ``force``, ``timeout``, ``cpus``, ``memory`` in MiB, ``gpus``, ``workers`` ...)."""
    return default_connection().environment(requirements, python, **options)


@public
def terminate() -> dict[str, Any]:
    """:meth:`Connection.terminate` of the last :func:`connect`."""
    return default_connection().terminate()


__all__ = ["PYTHON", "Connection", "connect", "deploy_url_from", "environment", "terminate"]
