"""What a restarted local orchestrator does with the servers an earlier one left: adopt
those it can trust, stop the rest (see :mod:`zexec.adapters.orchestrator_local.
orchestrator`)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from zexec.adapters.orchestrator_local import procs
from zexec.adapters.orchestrator_local.records import distrust, record_spec
from zexec.adapters.orchestrator_local.servers import NEXT, Server

log = logging.getLogger("zexec.orchestrator")


class Recovery:
    """The restart methods of :class:`~zexec.adapters.orchestrator_local.orchestrator.
    LocalOrchestrator`; they share its state."""

    def _recover(self) -> None:
        """Adopt the recorded servers this orchestrator can trust; stop the rest."""
        doomed: list[tuple[int, int | None]] = []
        for key, r in self.records.load_all(drop_bad=True).items():
            pid, start = r["pid"], r.get("start")
            if not procs.alive(pid, start):
                self.records.remove(key, pid)
                continue
            # A replacement that had not taken over: the user's current server stays.
            why = "a replacement that had not taken over" if key.endswith(NEXT) \
                else self._distrust(r)
            if why is None:
                try:
                    self._adopt(key, r)
                    continue
                except (ProcessLookupError, KeyError, TypeError, ValueError) as exc:
                    why = f"cannot adopt it: {exc!r}"
            log.warning("stopping the %s of user %s left by an earlier Deploy API (pid %d): %s",
                        r.get("role"), r.get("user_id"), pid, why)
            doomed.append((pid, start))
            self.records.remove(key, pid)
        if doomed:
            procs.stop_groups(doomed, self.grace)

    def _distrust(self, r: dict[str, Any]) -> str | None:
        """Why the recorded, still running process ``r`` cannot be adopted (None: it can)."""
        uids = self.tenancy.uids
        return distrust(
            r, isolation=self.isolation.mode, broker_url=self.broker_backend_url,
            secret=self._secret_digest,
            env_complete=lambda spec, interpreter: self.envs.is_complete(spec, interpreter),
            uid_of=(lambda user_id: uids.uid_for(user_id)) if uids is not None else None,
        )  # fmt: skip

    def _adopt(self, key: str, r: dict[str, Any]) -> None:
        spec = record_spec(r)
        rec = Server(r["user_id"], key, spec, r["interpreter"], "ready", float(r["since"]))
        rec.tenant = self.tenancy.tenant(rec.user_id, key)
        rec.ready = Path(r.get("ready_file") or rec.tenant.ready_file)
        rec.proc = procs.Adopted(r["pid"], r.get("start"))
        self._servers[rec.user_id] = rec
        rec.thread = threading.Thread(target=self._supervise, args=(rec, rec.proc),
                                      name=f"zexec-local-{key}", daemon=True)
        rec.thread.start()
        log.info("adopted the running server of user %s (pid %d)", rec.user_id, rec.proc.pid)
