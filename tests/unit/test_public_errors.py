"""Every error an SDK user can be handed is importable from ``zexec`` itself: a notebook
writes ``except zexec.SerializationError``, not ``zexec.core.errors``."""

from __future__ import annotations

import inspect

import zexec
from zexec.core import errors as E

#: The families the SDK raises: a call's errors, the identity provider's verdicts and
#: environment()'s; and single ones (the base, the Deploy API unreachable or answering
#: nonsense, a serializer name not installed).
FAMILIES = (E.CallError, E.AuthError, E.InvalidEnvironment, E.EnvironmentFailed)
SINGLE = {E.ZexecError, E.ControlPlaneError, E.EnvironmentConflict, E.UnknownSerializerError}


def test_every_error_the_sdk_raises_is_exported():
    sdk = {c for c in vars(E).values() if inspect.isclass(c) and issubclass(c, FAMILIES)}
    sdk |= SINGLE
    missing = sorted(c.__name__ for c in sdk if getattr(zexec, c.__name__, None) is not c)
    assert missing == []
    assert {c.__name__ for c in sdk} <= set(zexec.__all__)
