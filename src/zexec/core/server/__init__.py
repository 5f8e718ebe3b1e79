"""The per-user server's pure parts: its calls' bookkeeping on an explicit clock (no
sockets, no processes); the ZeroMQ loop (:mod:`zexec.adapters.transport_zmq.server_loop`)
carries out what they decide."""
