"""The SDK users import: :class:`Client` and the :func:`remote` decorator."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from functools import update_wrapper
from typing import Any

from zexec.adapters.serializer import culprit, default_registry
from zexec.apps.client.fncache import FunctionFrames
from zexec.apps.client.mapping import batch_size_of, map_batches, map_calls, next_item
from zexec.apps.client.pending import END, PendingCall
from zexec.apps.client.progress import map_progress
from zexec.apps.client.session import Session
from zexec.apps.client.tracebacks import public, public_iter
from zexec.core.batching import MAX_BATCH, BatchSizer
from zexec.core.errors import ConfigurationError, SerializationError
from zexec.core.ports import Serializer

#: cloudpickle by default: it pickles interactively defined functions by value like dill
#: and runs on the C pickler (several times faster per call); dill stays one word away.
DEFAULT_SERIALIZER = "cloudpickle"
_default_client: Client | None = None


class Client:
    """A connection to a zexec broker, shared by every remote call of this process.

    ``broker`` is ``"tcp://host:port"`` (or ``"host:port"``) of the broker's client port;
    ``token`` your bearer token. Both default to the ``ZEXEC_BROKER_URL`` and
    ``ZEXEC_TOKEN`` environment variables. ``"tls://host:port"`` names the broker's
    encrypted port: everything, token included, crosses the network in TLS; with
    ``tls_pin`` (``ZEXEC_BROKER_TLS_PIN``: the SHA-256 of the broker's certificate, from
    ``/broker-config``) exactly that certificate is accepted, without it the system's CAs
    and the host name are checked. ``serializer`` (``"dill"`` or
    ``"cloudpickle"``, or any a plugin installs) is the default for calls that do not
    name one. ``modules`` (modules or their names) are shipped as source with every
    call, for code that imports them on the server (local modules a function uses travel
    by themselves: see :mod:`zexec.adapters.serializer.localmods`). The connection is
    opened lazily on the first call, survives broker
    restarts, and a call fails (never hangs) within about ``connect_timeout`` /
    ``liveness_timeout`` seconds when the broker or the server is gone.

    The first client created becomes the default for :func:`remote` functions that do
    not name one (see :func:`set_default_client`).
    """

    def __init__(
        self,
        broker: str | None = None,
        token: str | None = None,
        *,
        serializer: str = DEFAULT_SERIALIZER,
        connect_timeout: float = 3.0,
        liveness_timeout: float = 3.0,
        tls_pin: str | None = None,
        transport_factory: Callable[[], Any] | None = None,
        modules: Iterable[Any] = (),
    ) -> None:
        broker = broker or os.environ.get("ZEXEC_BROKER_URL", "")
        tls_pin = tls_pin or os.environ.get("ZEXEC_BROKER_TLS_PIN") or None
        token = token or os.environ.get("ZEXEC_TOKEN", "")
        if not broker and transport_factory is None:
            raise ConfigurationError(
                "no broker address: pass Client(broker='tcp://host:5559', token=...) "
                "or set ZEXEC_BROKER_URL"
            )
        if not token:
            raise ConfigurationError("no token: pass Client(..., token=...) or set ZEXEC_TOKEN")
        if broker and "://" not in broker:
            broker = f"tcp://{broker}"
        self.broker = broker
        #: Whether calls cross the network encrypted (TLS: a ``tls://`` broker).
        self.encrypted = broker.startswith("tls://")
        self.serializers = default_registry()
        self.serializer = self.serializers.get(serializer)
        self._frames = FunctionFrames()
        self.modules = tuple(modules)
        if transport_factory is None:
            from zexec.adapters.transport_zmtp.client import ZmtpTransport, parse_url

            try:
                scheme = parse_url(broker)[0]
                if tls_pin:
                    from zexec.adapters.transport_zmtp.client import normalize_pin

                    normalize_pin(tls_pin)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
            if tls_pin and scheme != "tls":
                raise ConfigurationError("tls_pin is for an encrypted broker URL (tls://...)")

            def transport_factory() -> Any:
                return ZmtpTransport(broker, tls_pin=tls_pin)

        self._session = Session(transport_factory, token, connect_timeout=connect_timeout,
                                liveness_timeout=liveness_timeout)
        global _default_client
        if _default_client is None:
            _default_client = self

    def __repr__(self) -> str:
        return f"<zexec.Client broker={self.broker!r} serializer={self.serializer.name!r}>"

    def _serializer(self, name: str | None) -> Serializer:
        return self.serializer if name is None else self.serializers.get(name)

    def _frame(self, fn: Callable, ser: Serializer, modules: tuple[Any, ...] = ()) -> Any:
        return self._frames.frame(fn, ser, self.modules + modules)

    def _start(self, fn: Callable, args: tuple, kwargs: dict, *, serializer: str | None,
               timeout: float | None, fn_frame: Any = None,
               name: str | None = None, modules: tuple[Any, ...] = ()) -> PendingCall:
        ser = self._serializer(serializer)
        if fn_frame is None:
            fn_frame = self._frame(fn, ser, modules)
        with _arguments_named(fn):
            return self._session.start_call(
                fn_frame, args, kwargs, ser, timeout=timeout,
                stream=inspect.isgeneratorfunction(fn),
                name=getattr(fn, "__name__", "") if name is None else name,
            )

    def warm(self) -> None:
        """Open the connection to the broker now, in the background, and have the broker
        check the token meanwhile, so the first call waits for neither. Returns at once;
        a broker that cannot be reached shows up at the first call as usual."""
        self._session.warm()

    @public
    def submit(self, fn: Callable, /, *args: Any, _serializer: str | None = None,
               _timeout: float | None = None, _modules: tuple[Any, ...] = (),
               **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` remotely; returns a :class:`~concurrent.futures.Future`.

        ``future.cancel()`` stops the remote work. For a generator function the future
        resolves (to None) when the generator is exhausted; use :meth:`call` to iterate.
        """
        return self._start(fn, args, kwargs, serializer=_serializer, timeout=_timeout,
                           modules=_modules).future

    @public
    def call(self, fn: Callable, /, *args: Any, _serializer: str | None = None,
             _timeout: float | None = None, _modules: tuple[Any, ...] = (),
             **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` remotely and wait: returns its value, raises its
        exception, and prints its output here as it happens. A generator function
        returns an iterator over the items as the remote side yields them. Ctrl-C
        cancels the remote call."""
        if inspect.isgeneratorfunction(fn):
            call = self._start(fn, args, kwargs, serializer=_serializer, timeout=_timeout,
                               modules=_modules)
            return RemoteIterator(self._session, call)
        ser = self._serializer(_serializer)
        frame = self._frame(fn, ser, _modules)
        with _arguments_named(fn):
            return self._session.call(frame, args, kwargs, ser,
                                      timeout=_timeout, name=getattr(fn, "__name__", ""))

    @public
    async def call_async(self, fn: Callable, /, *args: Any, _serializer: str | None = None,
                         _timeout: float | None = None, _modules: tuple[Any, ...] = (),
                         **kwargs: Any) -> Any:
        """``await`` version of :meth:`call` (cancelling the task cancels the remote call)."""
        call = self._start(fn, args, kwargs, serializer=_serializer, timeout=_timeout,
                           modules=_modules)
        try:
            return await asyncio.wrap_future(call.future)
        except asyncio.CancelledError:
            self._session.cancel(call, "asyncio task cancelled")
            raise

    def map(self, fn: Callable, *iterables: Iterable[Any], serializer: str | None = None,
            timeout: float | None = None, window: int = 1024,
            batch_size: int | str = "auto", modules: tuple[Any, ...] = (),
            progress: bool | None = None) -> Iterator[Any]:
        """Like :func:`map`, remotely and pipelined: up to ``window`` items in flight at
        once, results yielded in input order. An exception raised for an item is raised
        when the iteration reaches that item.

        ``batch_size`` is how many items one remote call runs: ``"auto"`` (the default)
        starts with one and, once it has seen how long an item takes on the server,
        sends as many per call as run in about 20 ms (so quick functions are not
        drowned in messaging while slow ones still spread over every worker); an int
        fixes it (``1``: one call per item). ``timeout`` is per item (a batch gets
        ``timeout`` times its size). Generator functions always go one per call.

        ``progress``: ``None`` (default) shows a progress bar once the map has run for a
        second (a quick map shows none; in Jupyter a widget, in a terminal a text bar,
        in logs nothing), ``True`` from the start, ``False`` never. Bars need tqdm
        (``pip install 'zexec[notebook]'``)."""
        fixed = batch_size_of(batch_size)
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        if fixed == 1 or inspect.isgeneratorfunction(fn):
            results = map_calls(self, fn, iterables, serializer, timeout, window, modules)
        else:
            results = map_batches(self, fn, iterables, serializer, timeout, window,
                                  BatchSizer(fixed, cap=min(MAX_BATCH, max(1, window // 4))),
                                  modules)
        lengths = [len(it) for it in iterables if hasattr(it, "__len__")]
        total = min(lengths) if len(lengths) == len(iterables) and lengths else None
        return public_iter(map_progress(results, total, getattr(fn, "__name__", "map"),
                                        progress))

    def remote(self, fn: Callable | None = None, **options: Any) -> Any:
        """Decorator: like :func:`zexec.remote` bound to this client."""
        return remote(fn, client=self, **options)

    def close(self) -> None:
        """Close the connection; calls still in flight fail."""
        global _default_client
        self._session.close()
        if _default_client is self:
            _default_client = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _arguments_named(fn: Callable) -> Iterator[None]:
    """An argument that cannot be pickled is named as the argument it is ("argument 2
    of `f`"), not as a part of the ``(args, kwargs)`` pair that travels."""
    try:
        yield
    except SerializationError as exc:
        path = getattr(exc, "culprit_path", None)
        if path is None or getattr(exc, "named", False):
            raise
        root, rest = culprit.args_root(path, getattr(fn, "__name__", "the function"))
        named = SerializationError(f"{culprit.message(rest, exc.culprit, root)} "
                                   f"({exc.detail})")
        named.named = True
        raise named from None


class RemoteIterator:
    """Items of a remote generator, as they are yielded remotely."""

    def __init__(self, session: Session, call: PendingCall) -> None:
        self._session = session
        self._call = call
        self._done = False

    def __iter__(self) -> RemoteIterator:
        return self

    @public
    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        try:
            marker, value = next_item(self._session, self._call)
        except KeyboardInterrupt:
            self._done = True
            raise
        if marker is END:
            self._done = True
            if value is not None:
                raise value
            raise StopIteration
        return value

    def close(self) -> None:
        """Stop the remote generator."""
        if not self._done:
            self._done = True
            self._session.cancel(self._call, "iterator closed")


def set_default_client(client: Client | None) -> None:
    """Make ``client`` the one :func:`remote` functions use when they name none."""
    global _default_client
    _default_client = client


def get_default_client() -> Client:
    """The default client; created from ``ZEXEC_BROKER_URL``/``ZEXEC_TOKEN`` if unset."""
    if _default_client is None:
        Client()
    assert _default_client is not None
    return _default_client


class RemoteFunction:
    """A function that runs remotely when called. Made by :func:`remote`."""

    def __init__(self, fn: Callable, client: Client | None = None,
                 serializer: str | None = None, timeout: float | None = None,
                 modules: Iterable[Any] = ()) -> None:
        if not callable(fn):
            raise TypeError(f"remote() needs a function, not {type(fn).__name__}")
        self.fn = fn
        self.client = client
        self.serializer = serializer
        self.timeout = timeout
        self.modules = tuple(modules)
        if serializer is not None:
            default_registry().get(serializer)  # fail now on an unknown name
        update_wrapper(self, fn)

    def _client(self) -> Client:
        return self.client or get_default_client()

    def _signature(self) -> str:
        try:
            return str(inspect.signature(self.fn))
        except (TypeError, ValueError):
            return "(...)"

    def _options(self) -> dict[str, str]:
        kind = "generator (iterate the call)" if inspect.isgeneratorfunction(self.fn) \
            else "function"
        return {"kind": kind,
                "serializer": self.serializer or f"the client's ({DEFAULT_SERIALIZER} "
                                                  "unless set)",
                "timeout": "none" if self.timeout is None else f"{self.timeout:g} s"}

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or getattr(self.fn, "__name__", "?")
        extra = "".join(f" {k}={v!r}" for k, v in
                        (("serializer", self.serializer), ("timeout", self.timeout))
                        if v is not None)
        return f"<zexec.RemoteFunction {name}{self._signature()}{extra}>"

    def _repr_html_(self) -> str:
        from zexec.notebook.html import function_html

        client = self.client or _default_client
        runs_on = client.broker if client is not None else "the default client (zexec.connect)"
        doc = (inspect.getdoc(self.fn) or "").strip().split("\n")[0]
        return function_html(getattr(self.fn, "__name__", "?"), self._signature(), doc,
                             _defined_in(self.fn), self._options(), runs_on)

    @public
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run remotely and return the value (an iterator for generator functions)."""
        return self._client().call(self.fn, *args, _serializer=self.serializer,
                                   _timeout=self.timeout, _modules=self.modules, **kwargs)

    @public
    def submit(self, *args: Any, **kwargs: Any) -> Future:
        """Run remotely without waiting; returns a Future."""
        return self._client().submit(self.fn, *args, _serializer=self.serializer,
                                     _timeout=self.timeout, _modules=self.modules, **kwargs)

    def map(self, *iterables: Iterable[Any], window: int = 1024,
            batch_size: int | str = "auto", progress: bool | None = None) -> Iterator[Any]:
        """Pipelined map over the iterables; results in order, with a progress bar when
        it takes more than a second (see :meth:`Client.map`)."""
        return self._client().map(self.fn, *iterables, serializer=self.serializer,
                                  timeout=self.timeout, window=window, batch_size=batch_size,
                                  modules=self.modules, progress=progress)

    @public
    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        """Awaitable call."""
        return await self._client().call_async(self.fn, *args, _serializer=self.serializer,
                                               _timeout=self.timeout, _modules=self.modules,
                                               **kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, in this process."""
        return self.fn(*args, **kwargs)

    def options(self, **changes: Any) -> RemoteFunction:
        """A copy with other ``client``, ``serializer``, ``timeout`` or ``modules``."""
        kw = {"client": self.client, "serializer": self.serializer, "timeout": self.timeout,
              "modules": self.modules}
        kw.update(changes)
        return RemoteFunction(self.fn, **kw)


def _defined_in(fn: Callable) -> str:
    """``file:line`` of ``fn``'s definition (``Cell In[3], line 2`` for a notebook cell)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    where = code.co_filename
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    label = getattr(getattr(shell, "compile", None), "format_code_name", lambda n: None)(where)
    if label:
        where = " ".join(label)
    return f"{where}, line {code.co_firstlineno}"


def remote(fn: Callable | None = None, *, client: Client | None = None,
           serializer: str | None = None, timeout: float | None = None,
           modules: Iterable[Any] = ()) -> Any:
    """Make ``fn`` run remotely: ``@zexec.remote`` or ``@zexec.remote(serializer=...,
    timeout=..., client=..., modules=[mylib])``.

    Local modules (not installed: files beside your notebook or script) that ``fn``
    uses travel with it: their functions and classes by value, the ones it imports in
    its body as source. ``modules`` ships more as source (e.g. imported under a
    computed name); see :mod:`zexec.adapters.serializer.localmods` for the rules.

    Calling the result runs the function on your server and returns its value (or an
    iterator for generator functions); ``.submit()`` returns a Future, ``.map()``
    pipelines many calls, ``await .aio()`` suits asyncio, ``.local()`` runs it here.
    """
    if fn is None:
        return lambda f: RemoteFunction(f, client, serializer, timeout, modules)
    return RemoteFunction(fn, client, serializer, timeout, modules)
