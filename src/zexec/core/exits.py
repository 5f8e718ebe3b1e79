"""How a worker process ended, in words a user can act on.

``subprocess`` reports a death by signal as a negative exit code (-11); users see the
signal's name and what usually causes it instead. Whether the kernel's out-of-memory
killer sent a SIGKILL is not in the exit status: the caller passes what it observed (the
cgroup's ``oom_kill`` counter, see :mod:`zexec.apps.server.crashlog`).
"""

from __future__ import annotations

import signal

#: What usually sends each fatal signal to a Python process.
CAUSES = {
    "SIGSEGV": "segmentation fault: an invalid memory access, in a C extension or ctypes",
    "SIGBUS": "bus error: an invalid memory access, e.g. a truncated memory-mapped file",
    "SIGFPE": "arithmetic fault in native code",
    "SIGILL": "illegal instruction: native code built for another CPU",
    "SIGABRT": "aborted: a failed assertion or abort() in native code",
    "SIGTERM": "asked to stop",
}


def signal_name(code: int) -> str:
    """``SIGSEGV`` for -11; ``signal 77`` for an unknown one."""
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def describe_exit(code: int | None, oom: bool | None = None) -> str:
    """``code``: the exit status (negative: the signal); ``oom``: True when the kernel
    said its out-of-memory killer killed a process of ours meanwhile, False when it said
    it did not, None when that could not be read."""
    if code is None:
        return "ended (exit status unknown)"
    if code >= 0:
        return f"exited with status {code} (os._exit() or a fatal error in native code)"
    name = signal_name(code)
    if name == "SIGKILL":
        if oom:
            return ("was killed by SIGKILL from the kernel's out-of-memory killer: the "
                    "call used more memory than the server may have")
        if oom is None:
            return ("was killed by SIGKILL (by the kernel's out-of-memory killer when "
                    "memory ran out, or by kill -9)")
        return "was killed by SIGKILL (kill -9; the kernel counted no out-of-memory kill)"
    cause = CAUSES.get(name)
    return f"was killed by {name}" + (f" ({cause})" if cause else "")


def worker_died(code: int | None, oom: bool | None = None) -> str:
    """The message of a call whose worker died."""
    return f"the worker process running the call died: it {describe_exit(code, oom)}"
