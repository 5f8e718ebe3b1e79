"""Domain core of zexec: ports, value objects, wire protocol codecs, errors.

Nothing here does I/O or imports third-party packages; adapters and apps build on it.
"""
