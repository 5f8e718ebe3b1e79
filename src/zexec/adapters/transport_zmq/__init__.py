"""The server side of ZeroMQ (pyzmq): a per-user server's loop and its workers' sockets."""
