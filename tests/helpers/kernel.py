"""A real IPython kernel driven over the Jupyter messaging protocol, as JupyterLab, VS Code
and nbclient drive it, for tests of what a notebook user sees.

Unlike nbclient, which reads only the messages of the cell it is executing, this keeps
every output message by the cell it belongs to (its parent header), so a test can see
output that reaches a cell after it finished (a ``.submit()`` printing while another
cell runs). It also answers ``input()`` requests (pdb after ``%debug``) from a script.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import KernelManager

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without terminal colour codes."""
    return ANSI.sub("", text)


@dataclass
class Cell:
    """What one executed cell showed, in the order the kernel sent it."""

    msg_id: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        return "".join(o["text"] for o in self.outputs
                       if o["type"] == "stream" and o["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o["text"] for o in self.outputs
                       if o["type"] == "stream" and o["name"] == "stderr")

    @property
    def error(self) -> dict[str, Any] | None:
        """``ename``, ``evalue`` and the traceback (colour codes removed, one string)."""
        for o in self.outputs:
            if o["type"] == "error":
                return {**o["content"], "text": plain("\n".join(o["content"]["traceback"]))}
        return None

    def data(self, mime: str = "text/plain") -> list[str]:
        """Every ``mime`` representation shown (results, displays and their updates)."""
        return [o["content"]["data"][mime] for o in self.outputs
                if o["type"] in ("execute_result", "display_data", "update_display_data")
                and mime in o["content"]["data"]]

    @property
    def result(self) -> dict[str, Any] | None:
        """The ``data`` of the cell's value (its last expression), if any."""
        for o in self.outputs:
            if o["type"] == "execute_result":
                return o["content"]["data"]
        return None


class Kernel:
    """One running kernel; ``run(code)`` executes a cell and returns its :class:`Cell`."""

    def __init__(self, env: dict[str, str], cwd: str) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, cwd=cwd)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self._lock = threading.Condition()
        self._by_parent: dict[str, list[dict[str, Any]]] = defaultdict(list)
        #: When each cell went idle (finished), by its message id.
        self.finished: dict[str, float] = {}
        self._replies: dict[str, dict[str, Any]] = {}
        self._stop = False
        self._reader = threading.Thread(target=self._read_iopub, daemon=True)
        self._reader.start()

    def _read_iopub(self) -> None:
        while not self._stop:
            try:
                msg = self.client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            except Exception:  # channels closed at shutdown
                return
            parent = msg["parent_header"].get("msg_id", "")
            kind = msg["msg_type"]
            with self._lock:
                if kind == "status" and msg["content"]["execution_state"] == "idle":
                    self.finished[parent] = time.monotonic()
                elif kind in ("stream", "display_data", "update_display_data",
                              "execute_result", "error", "clear_output"):
                    self._by_parent[parent].append(
                        {"type": kind, "name": msg["content"].get("name"),
                         "text": msg["content"].get("text", ""), "content": msg["content"],
                         "at": time.monotonic()})
                self._lock.notify_all()

    def start(self, code: str, stdin: list[str] | None = None) -> str:
        """Send a cell for execution; returns its message id at once."""
        return self.client.execute(code, allow_stdin=stdin is not None, stop_on_error=False)

    def wait(self, msg_id: str, timeout: float = 120.0, stdin: list[str] | None = None
             ) -> Cell:
        """Wait until the cell ``msg_id`` finished (answering its ``input()`` requests
        with the ``stdin`` lines, in order) and return what it showed so far."""
        answers = list(stdin or [])
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if msg_id in self.finished:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"cell {msg_id} did not finish in {timeout}s")
            if stdin is not None:
                try:
                    req = self.client.get_stdin_msg(timeout=0.05)
                except queue.Empty:
                    continue
                if req["msg_type"] == "input_request":
                    self.client.input(answers.pop(0) if answers else "q")
            else:
                with self._lock:
                    self._lock.wait(0.1)
        while msg_id not in self._replies:  # replies of cells started meanwhile are kept
            reply = self.client.get_shell_msg(timeout=30)
            self._replies[reply["parent_header"].get("msg_id", "")] = reply["content"]
        cell = self.cell(msg_id)
        cell.reply = self._replies.pop(msg_id)
        return cell

    def run(self, code: str, timeout: float = 120.0, stdin: list[str] | None = None) -> Cell:
        """Execute a cell and wait for it to finish."""
        return self.wait(self.start(code, stdin), timeout, stdin)

    def cell(self, msg_id: str) -> Cell:
        """Everything the kernel has sent for cell ``msg_id`` so far (also after it
        finished)."""
        with self._lock:
            return Cell(msg_id, list(self._by_parent[msg_id]))

    def close(self) -> None:
        self._stop = True
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)
        self._reader.join(5)
