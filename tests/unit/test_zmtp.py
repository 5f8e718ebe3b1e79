"""The ZMTP codec without sockets: handshakes, frames, commands, refusals, and the same
events whatever the byte stream's split (hypothesis cuts it at every boundary)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zexec.core import zmtp
from zexec.core.zmtp import (
    Codec,
    Frame,
    FrameStart,
    PeerError,
    Ping,
    Pong,
    Ready,
    ZmtpError,
)

INLINE = 64


class TooLarge(Exception):
    pass


class Reader:
    """Plays the adapter: feeds chunks to a codec and reads large bodies itself, partly
    from the codec's buffer and partly 'from the wire' (the chunks that follow)."""

    def __init__(self, codec: Codec, batch: int = 0) -> None:
        self.codec = codec
        self.batch = batch  # > 0: take small frames with message_frames(batch) first
        self.events: list = []
        self.messages: list[list[bytes]] = []
        self._frames: list[bytes] = []
        self._body: bytearray | None = None
        self._got = 0
        self._more = False

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while True:
            if self._body is not None:
                # Straight from the wire into the body buffer, as recv_into would.
                n = min(len(view), len(self._body) - self._got)
                self._body[self._got:self._got + n] = view[:n]
                self._got += n
                self.codec.body_received(n)
                view = view[n:]
                if self._got < len(self._body):
                    return
                self._frame(bytes(self._body), self._more)
                self._body = None
            if len(view):
                self.codec.receive(view)
                view = view[len(view):]
            while True:
                if self.batch:
                    datas, ended = self.codec.message_frames(self.batch)
                    for i, data in enumerate(datas):
                        self._frame(data, not ended or i < len(datas) - 1)
                    if datas:
                        continue
                ev = self.codec.next_event()
                if ev is None:
                    return
                self.events.append(ev)
                if isinstance(ev, Frame):
                    self._frame(ev.data, ev.more)
                elif isinstance(ev, FrameStart):
                    if ev.size > 1 << 20:
                        raise TooLarge(ev.size)  # what the adapter's size limit does
                    self._body = bytearray(ev.size)
                    self._more = ev.more
                    self._got = self.codec.read_body_into(memoryview(self._body))
                    if self._got < ev.size:
                        break  # the rest comes from the next chunks
                    self._frame(bytes(self._body), ev.more)
                    self._body = None
            if not len(view):
                return

    def _frame(self, data: bytes, more: bool) -> None:
        self._frames.append(data)
        if not more:
            self.messages.append(self._frames)
            self._frames = []


def handshake(server_type="ROUTER", client_type="DEALER", identity=b""):
    server = Codec(server_type, as_server=True, inline_max=INLINE)
    client = Codec(client_type, as_server=False, identity=identity, inline_max=INLINE)
    for _ in range(3):
        server.receive(client.data_to_send())
        client.receive(server.data_to_send())
        for c in (server, client):
            while c.next_event() is not None:
                pass
    assert server.ready and client.ready
    return server, client


def wire(messages: list[list[bytes]]) -> bytes:
    return b"".join(bytes(b) for m in messages for b in zmtp.encode_message(m))


def test_greeting_is_zmtp_3_1_null():
    g = zmtp.greeting(as_server=True)
    assert len(g) == 64 and g[0] == 0xFF and g[9] == 0x7F and g[10:12] == b"\x03\x01"
    assert g[12:32] == b"NULL" + bytes(16) and g[32] == 1


def test_handshake_reports_the_peer_and_its_identity():
    server = Codec("ROUTER", as_server=True)
    client = Codec("DEALER", as_server=False, identity=b"worker-1")
    server.receive(client.data_to_send())
    assert server.next_event() is None  # our READY goes out once the greeting checked out
    out = server.data_to_send()
    assert out[:64] == zmtp.greeting(True) and b"READY" in out
    client.receive(out)
    assert isinstance(client.next_event(), Ready)
    server.receive(client.data_to_send())
    ev = server.next_event()
    assert ev == Ready("DEALER", b"worker-1", {"socket-type": b"DEALER",
                                               "identity": b"worker-1"}, 1)
    assert server.peer is ev and server.ready


@pytest.mark.parametrize("peer", ["DEALER", "REQ", "ROUTER"])
def test_router_accepts_its_compatible_peers(peer):
    server = Codec("ROUTER", as_server=True)
    server.receive(zmtp.greeting(False) + zmtp.ready(peer))
    assert server.next_event().socket_type == peer


@pytest.mark.parametrize("peer", ["PUB", "SUB", "PAIR", "REP", ""])
def test_router_refuses_incompatible_peers(peer):
    server = Codec("ROUTER", as_server=True)
    server.receive(zmtp.greeting(False) + zmtp.ready(peer))
    with pytest.raises(ZmtpError, match="cannot talk to our ROUTER"):
        server.next_event()
    assert server.next_event() is None  # closed for good


def test_client_refuses_a_peer_that_is_not_a_router():
    client = Codec("DEALER", as_server=False)
    client.receive(zmtp.greeting(True) + zmtp.ready("PUB"))
    with pytest.raises(ZmtpError, match="PUB socket"):
        client.next_event()


@pytest.mark.parametrize("data,why", [
    (b"GET / HTTP/1.1\r\n", "not a ZeroMQ"),
    (b"\xff" + bytes(8) + b"\x7e", "ZMTP 1.0"),
    (b"\xff" + bytes(8) + b"\x7f\x01", "ZMTP 1.0 "),
    (b"\xff" + bytes(8) + b"\x7f\x02", "ZMTP 2.0"),
    (b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"CURVE".ljust(20, b"\x00") + bytes(32), "CURVE"),
    (b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"PLAIN".ljust(20, b"\x00") + bytes(32), "PLAIN"),
])
def test_unsupported_greetings_are_refused_as_soon_as_they_show(data, why):
    codec = Codec("ROUTER", as_server=True)
    codec.receive(data)
    with pytest.raises(ZmtpError, match=why):
        codec.next_event()


def test_a_later_major_version_is_spoken_as_3_1():
    codec = Codec("ROUTER", as_server=True)
    codec.receive(b"\xff" + bytes(8) + b"\x7f\x04\x00" + b"NULL".ljust(20, b"\x00")
                  + bytes(32) + zmtp.ready("DEALER"))
    assert codec.next_event().minor == 1


@pytest.mark.parametrize("after,why", [
    (b"\x00\x01x", "before the READY"),
    (zmtp.command(b"HELLO"), "expected READY"),
    (b"\x05\x06\x05READY", "invalid command flags"),
    (b"\x04\x00", "malformed command"),
    (b"\x04\x03\x09ab", "malformed command"),
    (zmtp.command(b"READY", b"\x0bSocket-Type\x00\x00\x00\x09DEAL"), "malformed READY"),
    (zmtp.command(b"READY", b"\x0bSocket-Ty"), "malformed READY"),
    (zmtp.command(b"READY", b"x" * 9000), "command of"),
    (zmtp.ready("DEALER", identity=b"i" * 256), "identity longer"),
])
def test_handshake_violations(after, why):
    codec = Codec("ROUTER", as_server=True)
    codec.receive(zmtp.greeting(False) + after)
    with pytest.raises(ZmtpError, match=why):
        codec.next_event()


def test_error_during_handshake_is_reported():
    codec = Codec("DEALER", as_server=False)
    codec.receive(zmtp.greeting(True) + zmtp.error("go away"))
    assert codec.next_event() == PeerError("go away")
    assert codec.next_event() is None


def test_small_and_large_frames_and_their_headers():
    server, client = handshake()
    big = bytes(range(256)) * 10  # 2560 bytes: above INLINE and above the join limit
    r = Reader(server)
    r.feed(wire([[b"", b"a" * INLINE, big, b"z"]]))
    kinds = [(type(e).__name__, getattr(e, "size", None), e.more) for e in r.events]
    assert kinds == [("Frame", None, True), ("Frame", None, True),
                     ("FrameStart", len(big), True), ("Frame", None, False)]
    assert r.messages == [[b"", b"a" * INLINE, big, b"z"]]


def test_frame_start_comes_before_any_body_byte():
    server, _ = handshake()
    header = zmtp.frame_header(10**9, more=False)
    server.receive(header)
    assert server.next_event() == FrameStart(10**9, False)
    assert server.body_remaining == 10**9
    assert server.buffered == 0
    with pytest.raises(RuntimeError):
        server.next_event()


def test_long_headers_for_small_frames_are_accepted():
    server, _ = handshake()
    server.receive(b"\x03" + (3).to_bytes(8, "big") + b"abc" + b"\x02" + (0).to_bytes(8, "big"))
    assert server.next_event() == Frame(b"abc", True)
    assert server.next_event() == Frame(b"", False)


@pytest.mark.parametrize("data,why", [
    (b"\x08\x00", "invalid frame flags"),
    (b"\x82\x00" + bytes(7), "invalid frame flags"),
    (b"\x02" + (1 << 63).to_bytes(8, "big"), "out of range"),
    (b"\x05\x05\x04PING", "invalid command flags"),
    (zmtp.command(b"PING", b"\x01"), "malformed PING"),
    (zmtp.ready("DEALER"), "second READY"),
    (zmtp.command(b"X", b"y" * 9000), "command of"),
])
def test_traffic_violations(data, why):
    server, _ = handshake()
    server.receive(data)
    with pytest.raises(ZmtpError, match=why):
        server.next_event()


def test_ping_is_answered_with_its_context_and_reports_the_ttl():
    server, client = handshake()
    server.receive(zmtp.ping(3.0, b"ctx-0123456789abcdef"))
    assert server.next_event() == Ping(3.0, b"ctx-0123456789ab")
    client.receive(server.data_to_send())
    assert client.next_event() == Pong(b"ctx-0123456789ab")


def test_pings_between_the_frames_of_a_message():
    # libzmq can slip a heartbeat in between two frames of one message.
    server, _ = handshake()
    r = Reader(server)
    parts = zmtp.encode_message([b"", b"x" * 100, b"y"])
    r.feed(b"".join(bytes(p) for p in parts[:1]) + zmtp.ping(1.0) + b"".join(
        bytes(p) for p in parts[1:]))
    assert r.messages == [[b"", b"x" * 100, b"y"]]
    assert any(isinstance(e, Ping) for e in r.events)


def test_unknown_commands_are_ignored_and_error_ends_the_stream():
    server, _ = handshake()
    server.receive(zmtp.command(b"SUBSCRIBE", b"topic") + b"\x00\x01q" + zmtp.error("bye"))
    assert server.next_event() == Frame(b"q", False)
    assert server.next_event() == PeerError("bye")
    assert server.next_event() is None


def test_body_bookkeeping_refuses_more_than_announced():
    server, _ = handshake()
    server.receive(zmtp.frame_header(1000, False) + b"abc")
    assert isinstance(server.next_event(), FrameStart)
    view = memoryview(bytearray(1000))
    assert server.read_body_into(view) == 3
    with pytest.raises(ValueError):
        server.body_received(998)
    server.body_received(997)
    assert server.body_remaining == 0 and server.next_event() is None


def test_encode_message_never_copies_large_frames():
    big = bytearray(5000)
    parts = zmtp.encode_message([b"", b"hdr", big, memoryview(b"q" * 3000)])
    views = [p for p in parts if isinstance(p, memoryview)]
    assert len(views) == 2 and views[0].obj is big
    assert zmtp.encode_message([]) == [b"\x00\x00"]


def test_encode_message_takes_any_buffer_shape():
    import array

    arr = array.array("d", range(1000))  # 8000 bytes, format 'd'
    parts = zmtp.encode_message([arr])
    r = Reader(handshake()[0])
    r.feed(b"".join(bytes(p) for p in parts))
    assert r.messages == [[arr.tobytes()]]


def test_message_frames_take_the_rest_of_one_message_at_once():
    server, _ = handshake()
    server.receive(wire([[b"", b"a", b"b"], [b"c"]]))
    assert server.message_frames(10) == ([b"", b"a", b"b"], True)  # not into the next
    assert server.message_frames(10) == ([b"c"], True)
    assert server.message_frames(10) == ([], False)
    server.receive(wire([[b"x", b"y", b"z"]]))
    assert server.message_frames(2) == ([b"x", b"y"], False)  # the limit
    assert server.message_frames(2) == ([b"z"], True)


def test_message_frames_stop_before_what_next_event_reports():
    server, _ = handshake()
    big = b"B" * (INLINE + 1)
    server.receive(wire([[b"a", big]]))
    assert server.message_frames(10) == ([b"a"], False)
    assert server.next_event() == FrameStart(len(big), False)
    assert server.read_body_into(memoryview(bytearray(len(big)))) == len(big)
    server.receive(b"\x01\x01p" + zmtp.ping(5) + b"\x00\x01q")
    assert server.message_frames(10) == ([b"p"], False)
    assert server.message_frames(10) == ([], False)  # a PING: a command
    assert isinstance(server.next_event(), Ping)
    assert server.message_frames(10) == ([b"q"], True)
    server.receive(b"\x01\x05ab")  # incomplete
    assert server.message_frames(10) == ([], False)
    assert server.buffered == 4
    server.receive(b"cde")
    server.receive(b"\x08\x00")  # reserved flags: left for next_event to refuse
    assert server.message_frames(10) == ([b"abcde"], False)
    assert server.message_frames(10) == ([], False)
    with pytest.raises(ZmtpError, match="invalid frame flags"):
        server.next_event()


def test_message_frames_before_the_handshake_take_nothing():
    server = Codec("ROUTER", as_server=True)
    server.receive(b"\x00\x01a")
    assert server.message_frames(10) == ([], False)
    assert server.buffered == 3


@pytest.mark.parametrize("size", [0, 1, 255, 256, 2048, 2049, 70000])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_encode_message_headers(size, kind):
    frame = kind(b"s" * size)
    joined = b"".join(bytes(p) for p in zmtp.encode_message([frame, frame]))
    header_more, header_last = zmtp.frame_header(size, True), zmtp.frame_header(size, False)
    assert joined == header_more + b"s" * size + header_last + b"s" * size
    assert header_more[0] & zmtp.MORE and not header_last[0] & zmtp.MORE
    assert len(header_last) == (2 if size <= 255 else 9)


# --------------------------------------------------------------------------- properties

FRAMES = st.lists(
    st.one_of(st.binary(max_size=80), st.binary(min_size=250, max_size=300),
              st.integers(0, 3000).map(lambda n: bytes([n % 251]) * n)),
    min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAMES, min_size=1, max_size=5), st.data())
def test_same_messages_whatever_the_split(messages, data):
    server, _ = handshake()
    stream = wire(messages)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=30)))
    r = Reader(server, batch=data.draw(st.sampled_from([0, 1, 3, 64])))
    prev = 0
    for cut in [*cuts, len(stream)]:
        r.feed(stream[prev:cut])
        prev = cut
    assert r.messages == messages


@settings(max_examples=60, deadline=None)
@given(st.lists(FRAMES, min_size=1, max_size=3))
def test_byte_by_byte_including_the_handshake(messages):
    client = Codec("DEALER", as_server=False)
    client.receive(zmtp.greeting(True) + zmtp.ready("ROUTER"))
    while client.next_event() is not None:
        pass
    stream = client.data_to_send() + wire(messages)
    server = Codec("ROUTER", as_server=True, inline_max=INLINE)
    r = Reader(server)
    for i in range(len(stream)):
        r.feed(stream[i:i + 1])
    assert r.messages == messages
    assert isinstance(r.events[0], Ready)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_after_the_handshake_raises_only_zmtp_errors(junk):
    server, _ = handshake()
    r = Reader(server)
    try:
        r.feed(junk)
    except (ZmtpError, TooLarge):
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_greetings_raise_only_zmtp_errors(junk):
    codec = Codec("ROUTER", as_server=True)
    try:
        codec.receive(junk)
        while codec.next_event() is not None:
            pass
    except ZmtpError:
        pass
