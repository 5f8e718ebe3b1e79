"""Functions and classes importable both in the tests and in the servers' workers (they
run from the repo root), so they pickle by reference like library code would."""


class AppError(Exception):
    pass


def sleeper(seconds):
    import time

    print("sleeping", flush=True)
    time.sleep(seconds)
    return "woke"


def wait_for_file(path):
    """Print "waiting", then block until ``path`` exists: lets a test hold a call in
    flight for exactly as long as it needs, with no sleeps."""
    import os
    import time

    print("waiting", flush=True)
    while not os.path.exists(path):
        time.sleep(0.01)
    return "released"


def stop_myself():
    """Stop the calling worker (SIGSTOP): it makes no progress until continued."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSTOP)
    return "continued"
