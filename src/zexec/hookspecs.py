"""zexec's hook specifications and markers: the leaf every plugin imports.

A plugin module (a site's, or one of zexec's built-ins) imports ``hookimpl`` from here
(or from :mod:`zexec.plugins`, which re-exports it); it imports nothing else of zexec's
plugin machinery, so a built-in adapter and the manager that loads it never import each
other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from zexec.core.model import EnvSpec, UserIdentity
    from zexec.core.ports import Serializer

PROJECT = "zexec"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class ZexecSpec:
    """Hook specifications."""

    @hookspec
    def zexec_serializers(self) -> list[Serializer]:
        """Return serializers this plugin provides.

        Each is an object satisfying :class:`zexec.core.ports.Serializer`: a unique
        ``name`` plus ``dumps(obj) -> [main, *buffers]`` and ``loads(frames)``. The
        client names the serializer in every call, so the same plugin must be installed
        on the client and in the server's environment. A plugin adds names: one that
        provides a built-in name (``dill``, ``cloudpickle``) is ignored for it; between
        two site plugins with the same name, the one registered last wins (see
        :mod:`zexec.plugins`).
        """

    @hookspec(firstresult=True)
    def zexec_server_image(self, env: EnvSpec) -> str | None:
        """Return the container image for a server running ``env``, or None to pass.

        Called by the Kubernetes orchestrator for every server it creates. The first
        plugin returning a non-None image wins (the one registered last is asked first);
        when none does, ``ZEXEC_K8S_SERVER_IMAGE`` with ``{python}`` replaced by
        ``env.python`` is used. A site can map an environment to an image it prebuilt
        with the requirements already installed (match on ``env.digest`` or inspect
        ``env.requirements``); the orchestrator still runs the install step, which pip
        finishes at once when everything is satisfied. The image must provide
        ``python`` (of version ``env.python``, with zexec installed) and ``test``, and
        must run as a non-root user (uid 1000 is used).
        """

    @hookspec
    def zexec_server_pod_overrides(self, env: EnvSpec, user: UserIdentity) -> dict | None:
        """Return changes to the server pod's ``spec`` for ``user`` running ``env``, or None.

        The dict uses the Kubernetes PodSpec field names (camelCase) and is merged into
        the spec zexec builds: dicts merge key by key; lists of objects with a ``name``
        (``containers``, ``initContainers``, ``volumes``, ``volumeMounts``, ``env``) merge
        by name (same name: merged, new name: appended); other lists of objects
        (``tolerations`` ...) are appended to; scalars and lists of scalars replace.
        The server container is named ``server``. Typical uses: GPUs
        (``{"containers": [{"name": "server", "resources": {"limits":
        {"nvidia.com/gpu": 1}}}], "nodeSelector": {...}, "tolerations": [...]}``), node
        selectors by group (``user.groups``), extra volumes. Every plugin's result is
        applied, in registration order (a later plugin wins on a conflicting value).
        The result must still satisfy the namespace's Pod Security level.
        """
