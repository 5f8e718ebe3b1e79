"""The broker's routing core: a pure state machine, frames in, frames out.

No sockets and no threads here. The socket loop (:mod:`zexec.adapters.transport_zmtp.
broker_loop`) feeds it messages and auth outcomes and sends what it takes from its outbox;
tests drive it directly. Token checks are asynchronous: a message whose token is not in
the cache is *parked* and an auth request is queued (``take_auth_requests``); the loop runs
the check in a thread and hands the outcome back with :meth:`~zexec.core.broker.router.Router.on_auth_result`, so a
slow identity provider never stalls other users' traffic. (The loop checks most tokens
before it even reads the rest of their message; messages it did not read whole come in
through :meth:`~zexec.core.broker.router.Router.on_frontend_refused` and :meth:`~zexec.core.broker.router.Router.on_backend_refused`.)

Routing ids are the ones the socket loop gives: a key it assigned per connection, or on
the backend a worker's name (unique among live connections, never starting with a zero
byte, so it cannot collide with a key).

State is soft: registered servers (refreshed by heartbeats), their workers, and calls in
flight. A restarted broker rebuilds it from the next heartbeats; calls that were in
flight are reported lost to clients that ask (PING).

**Direct dispatch.** A server that registers with ``"direct": true`` has its workers
connect to the backend themselves and announce when idle (``WRDY``, with the server's
credential). The broker then hands a call straight to an idle worker of the user's
server, or queues it here until one is free (a worker is free again once it sent the
call's final event), so a call crosses one process fewer. The broker is then the one
place that decides how a call ends: it answers a cancel and an expired timeout itself
and asks the server to ``KILL`` the worker that was running the call; a worker that died
(``WGONE`` from its server) fails its call. A server without ``direct`` gets the calls
and runs its own queue.
"""
