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


def my_client_id():
    """Runs in a worker: the routing id the broker gave the calling client's connection
    (user code can dig it out of the worker's memory)."""
    import gc

    for obj in gc.get_objects():
        if type(obj).__name__ == "Call" and getattr(obj, "client_id", b""):
            return obj.client_id
    return b""


def my_worker_names():
    """Runs in a worker: the backend names of this worker's ZeroMQ sockets."""
    import gc

    import zmq

    names = []
    for obj in gc.get_objects():
        # The broker link: the one socket with ZMTP heartbeats (not the server's ipc).
        if isinstance(obj, zmq.Socket) and not obj.closed and \
                obj.getsockopt(zmq.HEARTBEAT_IVL) > 0:
            names.append(obj.getsockopt(zmq.ROUTING_ID))
    return [n for n in names if n]


def filled(nbytes, value=7):
    """Runs in a worker: ``nbytes`` bytes of ``value`` as a numpy array (a large result
    made remotely, so the client sends nothing big)."""
    import numpy as np

    return np.full(nbytes, value, dtype=np.uint8)


def stop_myself():
    """Stop the calling worker (SIGSTOP): it makes no progress until continued."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSTOP)
    return "continued"


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
