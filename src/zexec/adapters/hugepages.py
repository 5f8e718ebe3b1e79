"""Large message buffers in transparent huge pages, for the processes that move payloads.

ZeroMQ receives every message into a fresh ``malloc``'d buffer; for a large payload
that is a fresh ``mmap``, and the kernel then faults it in 4 KiB page by page. On this
project's VMs that first touch costs far more than the copy itself (100 MiB: 142 ms to
copy into fresh memory, 17 ms into warm memory, 37 ms into fresh memory in huge pages;
a broker, server and worker each receive a call's payload, so a 100 MiB round trip went
from 0.43 s to 0.29 s). glibc's tunable ``glibc.malloc.hugetlb=1`` (glibc >= 2.35)
makes malloc ``madvise(MADV_HUGEPAGE)`` its mmapped chunks, which kernels honour in the
common ``madvise`` THP mode; other libcs ignore it.

The tunable is read when a process starts, so it goes into the environment of every
payload-relaying process zexec starts: the broker (``zexec up``), servers (the local
orchestrator), workers (the server's pool); the container images set it too.
``ZEXEC_HUGEPAGES=0`` in the starting process's environment turns it off.
"""

from __future__ import annotations

import mmap
import os
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb"
SETTING = f"{TUNABLE}=1"
OPT_OUT = "ZEXEC_HUGEPAGES"


def with_hugepages(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the tunable added to ``GLIBC_TUNABLES`` (kept as it is if it already
    sets ``glibc.malloc.hugetlb`` either way, or if ``ZEXEC_HUGEPAGES=0``)."""
    out = dict(env)
    if out.get(OPT_OUT) == "0" or sys.platform != "linux":
        return out
    current = out.get("GLIBC_TUNABLES", "")
    if any(item.split("=", 1)[0] == TUNABLE for item in current.split(":") if item):
        return out
    out["GLIBC_TUNABLES"] = f"{current}:{SETTING}" if current else SETTING
    return out


def advise(buf: mmap.mmap) -> None:
    """Ask for transparent huge pages for an anonymous mapping of ours (a large frame's
    buffer): the same first-touch saving as the malloc tunable above, for the buffers
    zexec's own ZMTP code allocates. Off with ``ZEXEC_HUGEPAGES=0``; a no-op where the
    kernel has no such advice."""
    if os.environ.get(OPT_OUT) == "0":
        return
    flag = getattr(mmap, "MADV_HUGEPAGE", None)
    if flag is not None:
        try:
            buf.madvise(flag)
        except OSError:
            pass
