"""Functions and classes importable both in the tests and in the servers' workers (they
run from the repo root), so they pickle by reference like library code would."""


class AppError(Exception):
    pass


def sleeper(seconds):
    import time

    print("sleeping", flush=True)
    time.sleep(seconds)
    return "woke"
