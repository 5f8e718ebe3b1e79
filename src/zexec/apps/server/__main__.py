"""``python -m zexec.apps.server``: run a per-user server configured by ZEXEC_SERVER_*.

The first worker is started before anything else. A worker needs only the server's
private ipc endpoint (it gets its configuration over it), so its start-up overlaps the
server's own imports and settings (~0.3 s) and the first call finds a warm worker. If
the server then fails to start, the worker sees its parent gone and exits.
"""

import shutil
import sys


def main() -> int:
    from zexec.apps.server.pool import FIRST_WORKER, private_endpoint, start_worker

    workers = private_endpoint()
    first = start_worker(workers[1], FIRST_WORKER)
    try:
        from zexec.apps.guard import guard
        from zexec.apps.server.app import main as serve

        # guard: a bad setting is one line naming the variable, not a traceback.
        code = guard("server", lambda: serve(workers=workers,
                                             early_worker=(first, FIRST_WORKER)))
        if code:
            raise SystemExit(code)
        return 0
    except BaseException:  # failed to start (bad settings ...): leave nothing behind
        first.kill()
        first.wait()
        shutil.rmtree(workers[0], ignore_errors=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
