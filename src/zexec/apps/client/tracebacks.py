"""What the caller's traceback shows of zexec: nothing, unless ``ZEXEC_DEBUG`` is set.

An error of a remote call is raised deep inside the SDK: the I/O thread resolves a
future, ``concurrent.futures`` re-raises it in the waiting thread, and half a dozen
frames of zexec and the standard library stand between the user's line and the remote
frames (:mod:`zexec.apps.client.remote_frames`). The SDK's public entry points are
wrapped by :func:`public` (:func:`public_iter` for iterators): an error that is zexec's
(a :class:`~zexec.core.errors.ZexecError`), a remote one, or Ctrl-C leaves them with
its traceback cut to the remote frames alone (none for a local error). What remains of
zexec is the wrapper's own frame, which IPython, pytest and IPython's debugger hide
(``__tracebackhide__``); a plain Python traceback shows its one line, whose comment says
how to see the rest. Any other exception (a bug of zexec's) passes untouched.

With ``ZEXEC_DEBUG`` set to a non-empty value, nothing is cut or hidden; it is read at
each error, so ``%env ZEXEC_DEBUG=1`` in a notebook takes effect at once.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from zexec.apps.client.remote_frames import remote_part
from zexec.core.errors import ZexecError

F = TypeVar("F", bound=Callable[..., Any])


def debug_enabled() -> bool:
    """Whether ``ZEXEC_DEBUG`` asks for zexec's own frames in tracebacks."""
    return bool(os.environ.get("ZEXEC_DEBUG"))


def _surfaced(exc: BaseException, hide: bool) -> BaseException | None:
    """``exc`` with its traceback cut to its remote part, when it is one to cut (and
    ``hide``, i.e. not debugging); None: re-raise it as it is."""
    if not hide:
        return None
    remote = remote_part(exc.__traceback__)
    if remote is None and not isinstance(exc, ZexecError | KeyboardInterrupt):
        return None
    return exc.with_traceback(remote)


def public(fn: F) -> F:
    """Wrap an SDK entry point (a function or a coroutine function) so that the errors
    it raises show the caller's frames and the remote ones, not zexec's."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = not debug_enabled()
            try:
                return await fn(*args, **kwargs)
            except BaseException as exc:
                cut = _surfaced(exc, __tracebackhide__)
                if cut is None:
                    raise
            raise cut  # zexec: the remote frames follow (ZEXEC_DEBUG=1 shows zexec's own)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = not debug_enabled()
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            cut = _surfaced(exc, __tracebackhide__)
            if cut is None:
                raise
        raise cut  # zexec: the remote frames follow (ZEXEC_DEBUG=1 shows zexec's own)

    return wrapper  # type: ignore[return-value]


def public_iter(items: Iterator[Any]) -> Iterator[Any]:
    """``items`` (an SDK generator) with the errors it raises cut as by :func:`public`."""
    __tracebackhide__ = not debug_enabled()
    try:
        yield from items
        return
    except GeneratorExit:
        raise
    except BaseException as exc:
        cut = _surfaced(exc, __tracebackhide__)
        if cut is None:
            raise
    raise cut  # zexec: the remote frames follow (ZEXEC_DEBUG=1 shows zexec's own)
