"""Progress displays: while a user's server is being provisioned, and of a long ``.map``.

Three sinks, chosen once per display:

* Jupyter (an IPython kernel is running): one output area updated in place through
  ``IPython.display`` (``display_id``), since ``\\r`` does not rewrite a notebook cell;
* a terminal (the stream is a TTY): one line rewritten with ``\\r``;
* anything else (logs, CI, pipes): one plain line per phase change, so a log file gets
  a readable history instead of hundreds of carriage returns.

IPython is never imported here unless the program already did: inside a kernel it is
loaded, and outside one importing it would only cost time.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

BAR = 20


def kernel_shell() -> Any:
    """The IPython shell when this code runs inside a kernel (Jupyter, VS Code
    notebooks), else None."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell if getattr(shell, "kernel", None) is not None else None


def in_kernel() -> bool:
    """Whether this code runs inside an IPython kernel (Jupyter, VS Code notebooks)."""
    return kernel_shell() is not None


def describe(status: dict[str, Any], elapsed: float, label: str) -> str:
    """One line: label, phase, a bar of the phase's share of the way, elapsed seconds
    and, while building, the installer's latest line."""
    phase = status.get("phase") or "?"
    share = status.get("progress")
    filled = int(round((share or 0.0) * BAR))
    bar = "#" * filled + "." * (BAR - filled)
    line = f"{label}: [{bar}] {phase:<10} {elapsed:5.0f}s"
    if (status.get("previous") or {}).get("phase") == "ready":
        line += "  (your current server serves meanwhile)"
    tail = status.get("log_tail") or []
    if phase in ("installing", "starting") and tail:
        line += f"  {str(tail[-1]).strip()}"
    return line


class Progress:
    """``update(status)`` while waiting; ``close(final)`` once (idempotent)."""

    def __init__(
        self, enabled: bool = True, stream: TextIO | None = None, label: str = "zexec environment"
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.started = time.monotonic()
        self._last = ""
        self._handle: Any = None
        self._closed = False
        if not enabled:
            self.mode = "off"
        elif in_kernel():
            self.mode = "jupyter"
        elif getattr(self.stream, "isatty", lambda: False)():
            self.mode = "tty"
        else:
            self.mode = "lines"

    def update(self, status: dict[str, Any]) -> None:
        if self.mode == "off" or self._closed:
            return
        text = describe(status, time.monotonic() - self.started, self.label)
        if self.mode == "jupyter":
            self._show_jupyter(text)
        elif self.mode == "tty":
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + text[:width] + "\x1b[K")  # \x1b[K: clear the rest
            self.stream.flush()
        elif status.get("phase") != self._last:
            self._last = status.get("phase") or ""
            self.stream.write(text.rstrip() + "\n")
            self.stream.flush()

    def _show_jupyter(self, text: str) -> None:
        from IPython.display import Pretty, display

        if self._handle is None:
            self._handle = display(Pretty(text), display_id=True)
        else:
            self._handle.update(Pretty(text))

    def close(self, final: str | None = None) -> None:
        """Finish the display with ``final`` (e.g. "ready in 3s") in place of the bar."""
        if self.mode == "off" or self._closed:
            return
        self._closed = True
        text = f"{self.label}: {final}" if final else ""
        if self.mode == "jupyter":
            if text:
                self._show_jupyter(text)
        elif self.mode == "tty":
            self.stream.write(("\r" + text + "\x1b[K\n") if text else "\n")
            self.stream.flush()
        elif text:
            self.stream.write(text + "\n")
            self.stream.flush()


#: A ``.map`` shows a progress bar only once it has run this many seconds: a quick map
#: (all its results in within a second) never shows one.
QUICK_MAP = 1.0


def _tqdm_class(force: bool) -> tuple[Any, dict[str, Any]] | None:
    """tqdm's bar class for here and its options, as ``tqdm.auto`` would choose (a
    widget in Jupyter when ipywidgets is installed, text otherwise), without its
    warning when ipywidgets is missing; None when tqdm is not installed."""
    try:
        from tqdm.std import tqdm
    except ImportError:
        return None
    if in_kernel():
        try:
            import ipywidgets  # noqa: F401 - the notebook bar is a widget
            from tqdm.notebook import tqdm as notebook_tqdm
        except ImportError:
            return tqdm, {"file": sys.stderr, "disable": False}  # \r works in a cell
        return notebook_tqdm, {}
    # A terminal gets a bar; logs and pipes (not a TTY) none, unless asked for.
    return tqdm, {"file": sys.stderr, "disable": False if force else None}


def map_progress(results: Iterator[Any], total: int | None, label: str,
                 progress: bool | None) -> Iterator[Any]:
    """``results`` of a ``.map``, counted by a progress bar: with ``progress=None`` one
    that appears once the map has run :data:`QUICK_MAP` seconds (none for quick maps
    and outside terminals and notebooks), with ``True`` one from the start, with
    ``False`` none. The bar needs tqdm (``pip install zexec[notebook]``)."""
    if progress is False or (progress is None and not in_kernel()
                             and not getattr(sys.stderr, "isatty", lambda: False)()):
        return results  # nowhere to show a bar: not even tqdm's import is paid
    found = _tqdm_class(force=bool(progress))
    if found is None:
        if progress:
            from zexec.core.errors import ConfigurationError

            raise ConfigurationError(
                "progress=True needs tqdm: pip install 'zexec[notebook]' (or tqdm)")
        return results
    cls, options = found
    return _counted(results, cls, options, total, label, 0.0 if progress else QUICK_MAP)


def _counted(results: Iterator[Any], cls: Any, options: dict[str, Any], total: int | None,
             label: str, delay: float) -> Iterator[Any]:
    bar = cls(total=total, desc=label, unit="item", delay=delay, **options)
    try:
        for value in results:
            bar.update(1)
            yield value
    finally:
        bar.close()
