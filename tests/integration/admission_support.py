"""The chart's ValidatingAdmissionPolicy, evaluated for real: its CEL expressions (with
cel-python) on API requests as the kmock emulator records them, the way the API server
would for the Deploy API's ServiceAccount. An expression that errors denies, as
``failurePolicy: Fail`` does.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
from chart_support import container, deployment, env_of, find

OPERATIONS = {"POST": "CREATE", "PUT": "UPDATE", "PATCH": "UPDATE", "DELETE": "DELETE"}


def _merge(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386), what the orchestrator's patches are."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class Policy:
    """The rendered policy's match conditions and validations, compiled."""

    def __init__(self, chart_docs: list[dict[str, Any]]) -> None:
        vaps = find(chart_docs, "ValidatingAdmissionPolicy")
        self.enabled = bool(vaps)
        env = celpy.Environment()
        spec = vaps[0]["spec"] if vaps else {}
        self.conditions = [env.program(env.compile(c["expression"]))
                           for c in spec.get("matchConditions") or ()]
        self.validations = [(env.program(env.compile(v["expression"])), v.get("message", ""))
                            for v in spec.get("validations") or ()]
        denv = env_of(container(deployment(chart_docs, "deploy-api")), chart_docs)
        sa_ns, _, sa_name = denv["ZEXEC_K8S_SERVICE_ACCOUNT"].partition(":")
        self.username = f"system:serviceaccount:{sa_ns}:{sa_name}"

    def denials(self, request: dict[str, Any], obj: dict[str, Any] | None) -> list[str]:
        if not self.enabled:
            return []
        act = {"request": celpy.json_to_cel(request),
               "object": celpy.json_to_cel(obj) if obj is not None else None}
        if not all(self._true(c, act) for c in self.conditions):
            return []
        return [message for program, message in self.validations if not self._true(program, act)]

    @staticmethod
    def _true(program: Any, act: dict[str, Any]) -> bool:
        try:
            return bool(program.evaluate(act))
        except Exception:  # an evaluation error denies (failurePolicy: Fail)
            return False


def admission_errors(requests: list[Any], chart_docs: list[dict[str, Any]]) -> list[str]:
    """What the policy denies among ``requests`` (kmock records, in order): each write
    evaluated with the object as it would be after it (a patch merged into the object
    as created earlier in ``requests``)."""
    policy = Policy(chart_docs)
    state: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    errors = []
    for r in requests:
        method = str(r.method).rsplit(".", 1)[-1].upper()
        if r.resource is None or method not in OPERATIONS:
            continue
        body = r.data if isinstance(getattr(r, "data", None), dict) else {}
        name = r.name or (body.get("metadata") or {}).get("name") or ""
        key = (r.resource.group, r.resource.plural, r.namespace or "", name)
        if method == "POST":
            state[key] = copy.deepcopy(body)
        elif method in ("PUT", "PATCH"):
            state[key] = _merge(state.get(key, {}), body) if method == "PATCH" else body
        obj = None if method == "DELETE" else state.get(key)
        request = {
            "userInfo": {"username": policy.username},
            "resource": {"group": r.resource.group, "version": r.resource.version,
                         "resource": r.resource.plural},
            "subResource": r.subresource or "",
            "operation": OPERATIONS[method],
            "name": name,
            "namespace": r.namespace or "",
        }
        what = f"{OPERATIONS[method]} {r.resource.plural} {r.namespace or ''}/{name}"
        errors += [f"admission policy denies ({m}): {what}" for m in policy.denials(request, obj)]
    return errors
