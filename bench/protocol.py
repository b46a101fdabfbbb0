"""The protocol minimum: the same wire exchange replayed by a client that does nothing but send and wait.

`record` puts a recording TCP proxy between one real invocation and the gateway and splits what
went over the wire into round trips, by the simulator's own rule: a request sent after a reply
arrived starts a new round trip. `replay` sends each round's recorded bytes on a raw socket and
reads until as many reply frames arrived as the real client had seen before it sent the next
round. Its time is the gateway's share of an invocation (processing, loopback TCP, injected
latency) with no client-side work to speak of.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Round:
    """One round trip: what the client sent, and how many reply frames it had in hand before the next."""

    request: bytes
    frames_needed: int            # cumulative count of reply frames since the connection opened


@dataclass(frozen=True)
class Exchange:
    """The round trips of one recorded connection."""

    rounds: tuple[Round, ...]

    @property
    def request_ids(self) -> list[list[int]]:
        """The TWS message ids sent in each round (the handshake shows as 0)."""
        return [_request_ids(r.request) for r in self.rounds]


def record(gateway: tuple[str, int], run: Callable[[str, int], None]) -> Exchange:
    """Call run(host, port) with a proxy to `gateway`; it must make exactly one connection."""
    listener = socket.create_server(('127.0.0.1', 0))
    events: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    done = threading.Event()

    def pump(source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while data := source.recv(65536):
                with lock:   # record and forward as one step, so the order of events is the order on the wire
                    events.append((direction, data))
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def proxy() -> None:
        client, _ = listener.accept()
        upstream = socket.create_connection(gateway)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=pump, args=(upstream, client, 'reply'), daemon=True)
        back.start()
        pump(client, upstream, 'request')
        back.join(5)
        client.close()
        upstream.close()
        done.set()

    threading.Thread(target=proxy, daemon=True).start()
    try:
        run('127.0.0.1', listener.getsockname()[1])
        done.wait(10)
    finally:
        listener.close()
    with lock:
        return _rounds(list(events))


def _rounds(events: list[tuple[str, bytes]]) -> Exchange:
    requests: list[bytearray] = []
    reply_offsets: list[int] = []        # reply bytes seen when each round's first request went out
    replies = bytearray()
    replied_since_request = True
    for direction, data in events:
        if direction == 'reply':
            replies += data
            replied_since_request = True
            continue
        if replied_since_request:
            requests.append(bytearray())
            reply_offsets.append(len(replies))
            replied_since_request = False
        requests[-1] += data
    frame_ends = _frame_ends(bytes(replies))
    needed = [sum(1 for end in frame_ends if end <= offset) for offset in reply_offsets[1:]] + [len(frame_ends)]
    return Exchange(tuple(Round(bytes(r), n) for r, n in zip(requests, needed)))


def _frame_ends(stream: bytes) -> list[int]:
    ends, offset = [], 0
    while offset + 4 <= len(stream):
        size = struct.unpack('>I', stream[offset:offset + 4])[0]
        offset += 4 + size
        if offset > len(stream):
            break
        ends.append(offset)
    return ends


def _request_ids(request: bytes) -> list[int]:
    if request.startswith(b'API\0'):
        return [0]
    ids, offset = [], 0
    while offset + 4 <= len(request):
        size = struct.unpack('>I', request[offset:offset + 4])[0]
        ids.append(int(request[offset + 4:offset + 4 + size].split(b'\0', 1)[0] or 0))
        offset += 4 + size
    return ids


def replay(gateway: tuple[str, int], exchange: Exchange, repeat_last: int = 1) -> list[float]:
    """Replay the exchange once on a fresh connection; returns the seconds each round took.

    With repeat_last > 1 the last round is sent that many times on the same connection (a
    persistent connection serving one job after another); each repeat adds one entry.
    """
    rounds = list(exchange.rounds)
    if repeat_last > 1:
        last = rounds[-1]
        per_repeat = last.frames_needed - (rounds[-2].frames_needed if len(rounds) > 1 else 0)
        rounds += [Round(last.request, last.frames_needed + per_repeat * i) for i in range(1, repeat_last)]
    times = []
    with socket.create_connection(gateway) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer, frames = b'', 0
        for round_ in rounds:
            started = time.perf_counter()
            sock.sendall(round_.request)
            while frames < round_.frames_needed:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError(f'gateway closed the replay after {frames} frames')
                buffer += data
                while len(buffer) >= 4 and len(buffer) >= 4 + (size := struct.unpack('>I', buffer[:4])[0]):
                    buffer = buffer[4 + size:]
                    frames += 1
            times.append(time.perf_counter() - started)
    # the next replay reuses the recorded client id: let the gateway see this connection go
    time.sleep(0.01)
    return times
