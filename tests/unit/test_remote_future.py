"""RemoteFuture.cancel: the caller's answer does not depend on the I/O thread's timing."""

from __future__ import annotations

from zexec.apps.client.pending import RemoteFuture
from zexec.core.errors import CallCancelled


class FinishesAtOnce:
    """A session whose I/O thread takes the cancel before ``cancel()`` returns: it fails
    the call's future with CallCancelled, as the real one does when the server answers
    first (the race seen in the Kubernetes e2e suite)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def cancel(self, call, reason: str = "", wait: float = 0.0) -> None:
        self.asked.append(reason)
        if not call.future.done():
            call.future.set_exception(CallCancelled("cancelled"))


class Call:
    def __init__(self, future: RemoteFuture) -> None:
        self.future = future


def test_cancel_is_true_even_when_the_io_thread_finishes_the_call_meanwhile():
    fut = RemoteFuture()
    session = FinishesAtOnce()
    fut._session, fut._call = session, Call(fut)
    assert fut.cancel() is True
    assert fut.cancelled() and session.asked == ["future cancelled"]
    assert fut.cancel() is True  # cancelling a cancelled future says so again


def test_a_finished_call_is_not_cancelled_and_the_server_is_not_asked():
    fut = RemoteFuture()
    session = FinishesAtOnce()
    fut._session, fut._call = session, Call(fut)
    fut.set_result(42)
    assert fut.cancel() is False and fut.result() == 42
    assert session.asked == []
