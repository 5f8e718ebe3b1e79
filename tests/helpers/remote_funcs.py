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


# ---------------------------------------------------------------- calls that surprise


def exits_3():
    import sys

    print("about to exit")
    sys.exit(3)


def plain_exit():
    exit()


def interrupts():
    raise KeyboardInterrupt("remote ctrl-c")


def gen_exit():
    yield 1
    raise GeneratorExit


def segfaults_after_printing():
    import ctypes
    import sys

    print("line one")
    print("to stderr", file=sys.stderr)
    print("last words", end="")
    ctypes.string_at(0)  # a real invalid read: SIGSEGV


def kills_itself(sig_name):
    import os
    import signal

    print(f"sending {sig_name}")
    os.kill(os.getpid(), getattr(signal, sig_name))


def hog():
    print("allocating")
    chunks = []
    while True:
        chunks.append(bytearray(16 * 1024 * 1024))  # touched: really resident
