"""Configuration of every zexec app, read from the environment (pydantic-settings).

Each app has its own settings class and environment prefix; the identity settings are
shared. Secrets are ``SecretStr`` so they never appear in reprs or logs.

Any setting can also come from a file in the directory ``ZEXEC_SECRETS_DIR`` names: the
file is named like the variable (``ZEXEC_BROKER_SERVER_SECRET``) and holds the value. That
is how ``zexec up`` hands the broker and the web process their secrets without putting
them in an environment (``/proc/<pid>/environ``); the environment wins over a file.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SecretsSettings(BaseSettings):
    """Where every process finds settings kept in files (``ZEXEC_SECRETS_DIR``)."""

    model_config = SettingsConfigDict(env_prefix="ZEXEC_", extra="ignore")

    #: A directory of files named like settings (``ZEXEC_BROKER_SERVER_SECRET``), each
    #: holding its value (mode 0600): read by every settings class after the
    #: environment, which wins. ``zexec up`` uses it for the secrets; a Kubernetes
    #: Secret mounted as a volume works the same way. Empty = none.
    secrets_dir: str = ""


class ZexecSettings(BaseSettings):
    """Base of every settings class: the environment, then the files of
    ``ZEXEC_SECRETS_DIR`` (see the module's docstring)."""

    def __init__(self, **values: Any) -> None:
        secrets_dir = SecretsSettings().secrets_dir
        if secrets_dir and "_secrets_dir" not in values:
            values["_secrets_dir"] = secrets_dir
        super().__init__(**values)


class AuthSettings(ZexecSettings):
    """How tokens are validated (``ZEXEC_AUTH_*``)."""

    model_config = SettingsConfigDict(env_prefix="ZEXEC_AUTH_", extra="ignore")

    #: ``http-post``: POST {"token": ...} to ``url``; ``http-get``: GET ``url`` with
    #: ``Authorization: Bearer``; ``static``: tokens from ``static_file`` (local use).
    mode: Literal["http-post", "http-get", "static", "oidc"] = "static"
    url: str = ""
    static_file: str = ""
    #: Comma-separated groups; empty = every authenticated user is allowed.
    allowed_groups: str = ""
    timeout: float = 5.0
    positive_ttl: float = 60.0
    negative_ttl: float = 5.0
    #: OIDC: JWKS URL, expected issuer and audience (mode ``oidc``).
    jwks_url: str = ""
    issuer: str = ""
    audience: str = ""


class LogSettings(ZexecSettings):
    """Where a process logs and how much (``ZEXEC_LOG_*``); every zexec process reads it."""

    model_config = SettingsConfigDict(env_prefix="ZEXEC_LOG_", extra="ignore")

    #: Log file the process writes and rotates itself (its stdout and stderr go there
    #: too); empty = stderr. ``zexec up`` sets it for the processes it starts.
    file: str = ""
    max_bytes: int = 10 * 1024**2
    backups: int = 3
    #: At most ``repeat_burst`` lines of one kind (logger, level, message template) per
    #: ``repeat_interval`` seconds; the next one says how many were held back. 0 = no limit.
    repeat_burst: int = 20
    repeat_interval: float = 60.0


class HttpSettings(ZexecSettings):
    """Limits of the HTTP apps: Deploy API, EP API, development IdP (``ZEXEC_HTTP_*``)."""

    model_config = SettingsConfigDict(env_prefix="ZEXEC_HTTP_", extra="ignore")

    #: Largest request body accepted, in bytes; larger ones get 413 without being read
    #: (or as soon as a chunked body passes the limit).
    max_body_bytes: int = 1024**2


class BrokerSettings(ZexecSettings):
    """The broker (``ZEXEC_BROKER_*``)."""

    model_config = SettingsConfigDict(env_prefix="ZEXEC_BROKER_", extra="ignore")

    host: str = "127.0.0.1"
    frontend_port: int = 5559
    backend_port: int = 5560
    control_port: int = 5561
    #: Secret that server credentials are derived from (HMAC per user id).
    server_secret: SecretStr = SecretStr("")
    #: Credential the control port requires; empty refuses every control command.
    admin_token: SecretStr = SecretStr("")
    #: A server that has not heartbeated for this long is dropped and its calls failed.
    server_ttl: float = 2.0
    #: How long SIGTERM waits for in-flight calls before exiting anyway.
    drain_timeout: float = 30.0
    #: Token checks run in this many threads; one client connection may have at most
    #: ``auth_checks_per_peer`` distinct unknown tokens being checked at once.
    auth_threads: int = 32
    auth_checks_per_peer: int = 4
    #: Token checks waiting or running per source address, at most (then "busy"):
    #: checks are served fairly, address by address.
    auth_checks_per_address: int = 32
    #: A client connection that tries more distinct invalid tokens than this is
    #: answered and closed.
    failed_tokens_per_conn: int = 3
    #: The encrypted client port: TLS (1.3) with this certificate and key (PEM files).
    #: When both are set, ``secure_port`` opens; the plain ``frontend_port`` stays for
    #: the released legacy clients and for loopback.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    secure_port: int = 5562
    #: A connection that has not shown a valid token or server credential may hold at
    #: most ``preauth_bytes``, all of them together ``preauth_total_bytes``, and must
    #: show one within ``preauth_timeout`` seconds.
    preauth_bytes: int = 64 * 1024
    preauth_total_bytes: int = 64 * 1024**2
    preauth_timeout: float = 10.0
    #: Largest frame accepted from an authenticated peer, in bytes (larger ones are
    #: refused with an error that names this limit), and most frames in one message.
    max_frame_bytes: int = 2 * 1024**3
    max_frames: int = 4096
    #: Bytes of large frames (over 64 KiB) the broker holds at once, at most: beyond,
    #: it reads no more large frames until some are sent on.
    max_payload_bytes: int = 4 * 1024**3
    #: Bytes queued to one peer that does not read, at most (then messages to it are
    #: dropped); a peer that reads nothing for ``write_timeout`` seconds is closed.
    max_output_bytes: int = 256 * 1024**2
    write_timeout: float = 60.0
    #: A connection without traffic for this many seconds, and without a call in
    #: flight, is closed (clients reconnect by themselves).
    idle_timeout: float = 300.0
    #: Messages parked while their token is being checked, at most (then "busy").
    max_parked: int = 10_000
    #: Bytes of arguments the calls waiting for one user's workers may hold here, at
    #: most (then "busy"): one user's backlog must not exhaust the shared broker.
    max_queued_bytes: int = 1024**3


class ServerSettings(ZexecSettings):
    """A per-user server (``ZEXEC_SERVER_*``)."""

    model_config = SettingsConfigDict(env_prefix="ZEXEC_SERVER_", extra="ignore")

    broker_url: str = "tcp://127.0.0.1:5560"
    user_id: str = ""
    #: ``zexec.core.protocol.server_credential(broker secret, user_id)``.
    credential: SecretStr = SecretStr("")
    #: An inherited file descriptor to read the credential from (until end of file)
    #: instead: how the local orchestrator hands it over, out of the environment.
    credential_fd: int = -1
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1)
    #: Run every call in a fresh worker process (isolation over speed).
    fresh_process: bool = False
    heartbeat_interval: float = 0.5
    #: Output batching: flush captured stdout/stderr after this many seconds or bytes.
    output_flush_interval: float = 0.02
    output_flush_bytes: int = 64 * 1024
    #: Touched once the broker accepted the registration (readiness probes, orchestrators).
    ready_file: str = ""
    #: Sent with every heartbeat (``name`` in its info): the Kubernetes orchestrator sets
    #: the pod's name, and reads a server's readiness from the broker by it.
    name: str = ""
    #: Exit (code 0) after this many seconds without calls; 0 = never. Orchestrators
    #: see the exit and report the server as terminated (idle).
    idle_timeout: float = 0.0
    #: A worker stopped (SIGSTOP, state ``T``) this many seconds is killed and its call
    #: fails with a message saying so, instead of waiting for ever; 0 = never.
    stopped_timeout: float = 10.0
    #: Exit code after a stop asked by SIGTERM or SIGINT (its calls drained first). The
    #: Kubernetes orchestrator sets 143 (128 + SIGTERM): a drained or evicted server then
    #: fails its pod, which the server Job's podFailurePolicy ignores and replaces,
    #: instead of succeeding, which would complete the Job as an idle exit does.
    signal_exit_code: int = Field(default=0, ge=0, le=255)
    #: Warm-pool mode (Kubernetes): with no user id and credential, the server builds
    #: its environment, then asks the Deploy API at this URL (``.../rexec``) for the user
    #: it is adopted by, proving itself as pool pod ``pool_pod`` with ``pool_key``.
    pool_url: str = ""
    pool_pod: str = ""
    pool_key: SecretStr = SecretStr("")


class KubernetesSettings(ZexecSettings):
    """The Kubernetes orchestrator (``ZEXEC_K8S_*``). The Helm chart sets these on the
    Deploy API; names here and in ``deploy/helm/zexec`` must agree (a test checks)."""

    model_config = SettingsConfigDict(env_prefix="ZEXEC_K8S_", extra="ignore")

    #: Each user's server lives in namespace ``<namespace_prefix><sanitised user id>``.
    namespace_prefix: str = "zexec-u-"
    #: Server image; ``{python}`` is replaced by the EnvSpec's ``major.minor``. A site
    #: plugin's ``zexec_server_image`` hook takes precedence.
    server_image: str = "zexec/server:py{python}"
    #: Digests of the server images by Python version (``3.12=sha256:...,...``): a
    #: listed version's image is pulled by digest (immutable) instead of its moving tag.
    server_image_digests: str = ""
    image_pull_policy: str = "IfNotPresent"
    #: In-cluster URL of the broker backend the servers connect to.
    broker_backend_url: str = "tcp://zexec-broker.zexec.svc:5560"
    #: Namespace and pod labels of the broker, for the servers' NetworkPolicy egress.
    broker_namespace: str = "zexec"
    broker_pod_labels: str = "app.kubernetes.io/component=broker"
    cpu_request: str = "250m"
    cpu_limit: str = "2"
    memory_request: str = "512Mi"
    memory_limit: str = "4Gi"
    #: Extra egress CIDRs the servers may reach (comma-separated), e.g. a package mirror.
    extra_egress_cidrs: str = ""
    #: Namespace and pod labels of the cluster DNS service: the only DNS the servers'
    #: NetworkPolicy lets them reach (port 53). A node-local DNS cache is an address:
    #: add it to ``extra_egress_cidrs``.
    dns_namespace: str = "kube-system"
    dns_pod_labels: str = "k8s-app=kube-dns"
    #: Name of the Secret (in the Deploy API's namespace) holding the broker's
    #: ``server-secret`` key; credentials for each user are derived from it.
    server_secret_name: str = "zexec-broker"
    #: ``ZEXEC_SERVER_WORKERS`` of every server pod (the idle timeout comes from the
    #: Deploy API's ``ZEXEC_DEPLOY_IDLE_TIMEOUT``).
    server_workers: int = 2
    #: Extended resource name a server pod's ``gpus`` request is made of (limits only,
    #: as Kubernetes wants for extended resources).
    gpu_resource: str = "nvidia.com/gpu"
    #: Package index the pods' installer uses (``UV_INDEX_URL``, ``PIP_INDEX_URL``); empty = its default.
    #: Its address must be reachable under the NetworkPolicy: an in-cluster proxy
    #: (``package_proxy_*``) or ``extra_egress_cidrs``. An ``http://`` index's host is
    #: trusted (``UV_INSECURE_HOST``, ``PIP_TRUSTED_HOST``): it is meant to be inside the cluster.
    pip_index_url: str = ""
    #: What installs the requirements in the pod's init container: ``uv`` (the local
    #: orchestrator's resolver; fast, and with ``install_cache_volume`` cached between
    #: spawns) or ``pip``.
    installer: Literal["uv", "pip"] = "uv"
    #: uv's cache, shared by every server pod's install step: a Kubernetes volume source
    #: as JSON, e.g. ``{"persistentVolumeClaim": {"claimName": "zexec-uv-cache"}}`` or a
    #: CSI (NFS) volume; empty = no cache (every spawn downloads its packages).
    install_cache_volume: str = ""
    #: Pod Security Standard enforced (and audited, warned) on each user namespace, at
    #: this pinned version; empty level = leave unset.
    pod_security_level: str = "restricted"
    pod_security_version: str = "v1.31"
    #: The in-cluster package index proxy (or site mirror) the servers' NetworkPolicy
    #: lets them reach, by selector: its namespace, pod labels (``k=v,...``; empty = no
    #: such rule) and TCP ports (comma-separated).
    package_proxy_namespace: str = ""
    package_proxy_pod_labels: str = ""
    package_proxy_ports: str = "3141"
    #: TCP ports ``extra_egress_cidrs`` are open on (comma-separated): never every port.
    extra_egress_ports: str = "443"
    #: Node disk a server pod may use (its writable layer, logs and the venv / tmp
    #: emptyDirs): a pod beyond the limit is evicted instead of filling the node.
    ephemeral_storage_request: str = "1Gi"
    ephemeral_storage_limit: str = "10Gi"
    #: ``sizeLimit`` of the emptyDirs holding the user's venv and ``/tmp``.
    venv_size_limit: str = "8Gi"
    tmp_size_limit: str = "2Gi"
    #: ClusterRole bound, by a RoleBinding made in each user namespace at creation, to
    #: ``service_account`` (``namespace:name``, the Deploy API's own): its rights inside
    #: user namespaces. Empty = no RoleBinding (the rights come from elsewhere).
    user_role: str = ""
    service_account: str = ""
    #: ResourceQuota ``hard`` of each user namespace (``k=v,...``, e.g.
    #: ``pods=4,limits.memory=8Gi``) and LimitRange ``max`` of one container
    #: (``cpu=2,memory=4Gi``); empty = none.
    resource_quota: str = ""
    limit_range_max: str = ""
    #: Seconds a server pod stays bound to a node that stopped reporting (unreachable or
    #: not ready) before Kubernetes evicts it, so that the server's Job makes a new pod
    #: (Kubernetes' default is 300).
    lost_node_seconds: int = 60
    #: Seconds a user namespace stays after its server is gone (idle exit, failure,
    #: terminated pod) before the Deploy API deletes it; 0 = never.
    namespace_ttl: int = 86400
    #: Directory of registry pull secrets (``<name>/.dockerconfigjson``) copied into each
    #: user namespace and named by the server pods; empty = none.
    pull_secrets_dir: str = ""
    #: Warm pool: this many spare server pods of the site's default environment
    #: (``pool_requirements``, comma-separated, on ``pool_python``; empty = the Deploy
    #: API's own Python) wait in namespace ``pool_namespace``; a spawn of that
    #: environment adopts one. 0 = no pool. The pool pods ask the Deploy API for their user at
    #: ``pool_deploy_url`` (its in-cluster URL with the route prefix, e.g.
    #: ``http://zexec-deploy-api.zexec.svc:8000/rexec``).
    pool_size: int = 0
    pool_namespace: str = "zexec-pool"
    pool_requirements: str = ""
    pool_python: str = ""
    pool_deploy_url: str = ""


class DeploySettings(ZexecSettings):
    """The Deploy API (``ZEXEC_DEPLOY_*``): spawns, reports and removes per-user servers.

    Who may use it is decided by the authenticator (``ZEXEC_AUTH_*``, including
    ``allowed_groups``); this class holds where it listens and what it drives.
    """

    model_config = SettingsConfigDict(env_prefix="ZEXEC_DEPLOY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    #: Path prefix of every route; the released clients expect ``/rexec``.
    prefix: str = "/rexec"
    #: Which orchestrator provisions servers: ``local`` processes on this machine,
    #: ``kubernetes`` (``ZEXEC_K8S_*``), or ``memory`` (tests/demos: provisions nothing).
    orchestrator: Literal["local", "kubernetes", "memory"] = "local"
    #: Broker address clients are told by ``GET {prefix}/broker-config``.
    broker_external_host: str = "127.0.0.1"
    broker_external_port: int = 5559
    #: The broker's encrypted (TLS) port and its certificate (PEM file): ``/broker-config``
    #: tells clients the port and the certificate's SHA-256, which the zexec SDK pins;
    #: empty file = plain only.
    broker_external_secure_port: int = 5562
    broker_tls_cert_file: str = ""
    #: Where the local orchestrator keeps environments, logs and server state.
    state_dir: str = Field(default_factory=lambda: os.path.expanduser("~/.zexec"))
    #: A server without calls for this many seconds is stopped; 0 = never.
    idle_timeout: float = 3600.0
    #: Also accept ``name @ url`` direct references in requirements (site decision).
    allow_unsafe_requirements: bool = False
    #: Form-encoded (legacy client) spawns wait up to this many seconds for the server
    #: to be ready, since those clients call it right after; 0 = answer at once.
    legacy_spawn_wait: float = 900.0
    #: Local orchestrator: how users are kept apart (see
    #: :mod:`zexec.adapters.orchestrator_local.isolation`): ``auto`` = the strongest
    #: this machine allows (``uid+sandbox``, ``uid``, ``sandbox``, else ``none``).
    isolation: Literal["auto", "uid+sandbox", "uid", "sandbox", "none"] = "auto"
    #: Without isolation, serve more than one user anyway: they all trust each other.
    single_trust_domain: bool = False
    #: Uids allocated to users (``FIRST-LAST``) when isolating by uid, kept per user.
    uid_range: str = "61184-65519"
    #: ``<user id>=<account or uid>,...``: users whose servers run as an existing
    #: account instead of an allocated uid.
    uid_map: str = ""
    #: The users' private working directories (one per user, mode 0700, owned by the
    #: server's uid); empty = ``<state_dir>/users``.
    users_dir: str = ""
    #: Local orchestrator: worker processes per user's server (calls of one user run
    #: this many at a time). One by default: every worker holds its own interpreter,
    #: numpy and the user's data, and a machine is shared by its users.
    server_workers: int = Field(default=1, ge=1)
    #: The most one user's server may ask for with ``environment(cpus=, memory=, gpus=,
    #: workers=)`` (any orchestrator): cores (float), MiB of memory, GPUs (0 = none
    #: allowed) and worker processes. A request beyond one is refused (HTTP 422, naming
    #: the limit); a request left out gets the orchestrator's defaults.
    max_cpus: float = Field(default=4.0, gt=0)
    max_memory: int = Field(default=8192, ge=1)
    max_gpus: int = Field(default=0, ge=0)
    max_workers: int = Field(default=8, ge=1)


class EPSettings(ZexecSettings):
    """The Endpoint (EP) API (``ZEXEC_EP_*``): status, discovery and dataset search."""

    model_config = SettingsConfigDict(env_prefix="ZEXEC_EP_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8001
    #: Base URL of the Deploy API, reported by ``GET /status/rexec`` (empty: rexec off).
    deploy_api_url: str = "http://127.0.0.1:8000"
    #: ``sqlite``: embedded full-text catalog; ``ckan``: a CKAN site's package_search.
    catalog: Literal["sqlite", "ckan"] = "sqlite"
    #: SQLite database file; empty = in memory (re-seeded at every start).
    catalog_db: str = ""
    #: JSON list of CKAN-style package dicts loaded into an empty SQLite catalog; empty
    #: = the sample datasets shipped with zexec.
    seed_file: str = ""
    ckan_url: str = ""
    ckan_api_key: SecretStr = SecretStr("")
    #: API version reported by ``GET /status/`` (NDP EP API contract level; ndp-ep warns
    #: below 0.2.0). Empty = the contract version this implementation speaks.
    version: str = ""
    #: Where ``POST /user/login`` forwards ``{"username","password"}``; empty = 501.
    login_url: str = ""


class ClientSettings(BaseSettings):
    """The SDK and the ``zexec`` command (``ZEXEC_*``). The SDK reads these names from
    the environment itself, without this class (importing pydantic would add a quarter
    second to every ``import zexec``); this class is their reference, and a test keeps
    the names the code reads and the fields here the same."""

    model_config = SettingsConfigDict(env_prefix="ZEXEC_", extra="ignore")

    #: Broker address ``zexec.Client()`` uses when given none (``tcp://host:port``).
    broker_url: str = ""
    #: Bearer token ``zexec.Client()`` uses when given none.
    token: SecretStr = SecretStr("")
    #: SHA-256 of the certificate of a ``tls://`` broker (``zexec.Client(tls_pin=)``'s
    #: default): the client accepts that certificate only.
    broker_tls_pin: str = ""
    #: Default ``--state-dir`` of ``zexec up/down/status/logs``.
    state_dir: str = Field(default_factory=lambda: os.path.expanduser("~/.zexec"))
    #: Non-empty: tracebacks keep zexec's own frames (the SDK's and the CLI's).
    debug: str = ""
    #: ``0``: the processes zexec starts do not put large buffers in huge pages.
    hugepages: str = "1"


#: Every settings class of zexec's processes and of the SDK.
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    SecretsSettings, AuthSettings, LogSettings, HttpSettings, BrokerSettings, ServerSettings,
    KubernetesSettings, DeploySettings, EPSettings, ClientSettings,
)


def setting_names() -> frozenset[str]:
    """Every ``ZEXEC_*`` name some settings class reads (its prefix and a field)."""
    return frozenset(f"{cls.model_config['env_prefix']}{field}".upper()
                     for cls in SETTINGS_CLASSES for field in cls.model_fields)
