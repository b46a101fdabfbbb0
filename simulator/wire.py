"""TWS API framing: 4-byte big-endian length + NUL-terminated UTF-8 fields."""
from __future__ import annotations

import math
import struct

HANDSHAKE_PREFIX = b'API\0'


def encode_field(value) -> str:
    """Render one field the way the gateway does: bools as 0/1, None as empty, floats without noise."""
    if value is None:
        return ''
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, float):
        if math.isnan(value):
            return ''
        if value == int(value) and abs(value) < 1e15:
            return f'{value:.1f}'
        return repr(value)
    return str(value)


def frame(fields) -> bytes:
    """One framed message from a list of fields."""
    payload = ''.join(encode_field(f) + '\0' for f in fields).encode()
    return struct.pack('>I', len(payload)) + payload


class FrameBuffer:
    """Accumulates bytes from the socket and yields complete messages as lists of fields."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf.extend(data)

    def take_raw(self, n: int) -> bytes | None:
        """Take `n` raw bytes (the unframed handshake prefix), or None if not yet available."""
        if len(self._buf) < n:
            return None
        raw = bytes(self._buf[:n])
        del self._buf[:n]
        return raw

    def messages(self):
        while len(self._buf) >= 4:
            (size,) = struct.unpack('>I', self._buf[:4])
            if len(self._buf) < 4 + size:
                return
            payload = bytes(self._buf[4:4 + size])
            del self._buf[:4 + size]
            fields = payload.decode(errors='backslashreplace').split('\0')
            if fields and fields[-1] == '':
                fields.pop()
            yield fields


def parse_version_range(text: str) -> tuple[int, int]:
    """'v157..176 +PACEAPI' -> (157, 176). Raises ValueError on anything else."""
    spec = text.split(' ', 1)[0]
    if not spec.startswith('v'):
        raise ValueError(f'bad version spec {text!r}')
    lo, _, hi = spec[1:].partition('..')
    return int(lo), int(hi or lo)
