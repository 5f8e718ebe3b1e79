"""The broker's routing core: a pure state machine, driven by the ZeroMQ loop with an
explicit clock (no sockets, no threads)."""
