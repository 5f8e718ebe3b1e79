"""Turn a command's failure into one message and an exit status.

Shared by the ``zexec`` command and every ``python -m zexec.apps.*`` entry point, so a
component started on its own reports a bad setting as one line naming the variable, the
same way ``zexec <component>`` does. A leaf: it imports nothing of the apps it guards.

Exit status: 0 success; 1 the command could not do its job; 2 bad input (arguments,
settings, configuration); 130 interrupted. ``ZEXEC_DEBUG=1`` adds the traceback of
unexpected errors.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable


class StackError(Exception):
    """``up``/``down`` could not do their job; the message says why (exit status 1)."""


class UsageError(Exception):
    """Arguments that parse but do not make sense, or name nothing (exit status 2)."""


def guard(command: str, run: Callable[[], int | None]) -> int:
    """Run a command; turn every failure into one message and an exit status."""
    from pydantic import ValidationError

    from zexec.apps.extras import missing_extra
    from zexec.core.errors import ConfigurationError, ZexecError

    def fail(code: int, message: str) -> int:
        sys.stderr.write(f"zexec {command}: {message}\n")
        return code

    try:
        return int(run() or 0)
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc, f"zexec {command}")
        if extra is not None:
            return fail(1, f"error: {extra}")
        return fail(1, _internal(exc))
    except (UsageError, ConfigurationError) as exc:
        return fail(2, f"error: {exc}")
    except ValidationError as exc:
        return fail(2, f"error: {_settings_message(exc)}")
    except (StackError, ZexecError) as exc:
        return fail(1, f"error: {exc}")
    except KeyboardInterrupt:
        return fail(130, "interrupted")
    except OSError as exc:  # an unwritable state dir, a full disk ...
        return fail(1, f"error: {exc}")
    except Exception as exc:
        return fail(1, _internal(exc))


def _settings_message(exc) -> str:
    """A pydantic-settings validation error as ``ZEXEC_VAR: problem (got ...)`` lines."""
    import zexec.settings

    title = getattr(exc, "title", "settings")
    model = getattr(zexec.settings, title, None)
    prefix = model.model_config.get("env_prefix", "") if model is not None else ""
    rows = [
        f"{prefix}{'_'.join(str(x) for x in e['loc']).upper()}: {e['msg']} (got {e.get('input')!r})"
        for e in exc.errors()
    ]
    return f"invalid {title}:\n  " + "\n  ".join(rows)


def _internal(exc: BaseException) -> str:
    """The message of an unexpected error (its traceback printed with ZEXEC_DEBUG)."""
    debug = bool(os.environ.get("ZEXEC_DEBUG"))
    if debug:
        traceback.print_exception(exc)
    hint = "" if debug else " (ZEXEC_DEBUG=1 shows the traceback)"
    return f"internal error: {type(exc).__name__}: {exc}{hint}"
