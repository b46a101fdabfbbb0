"""Turning the broker's dataclasses into JSON and back, and writing state files atomically."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .model import Account, Execution, Instrument, Order, Position


def encode(value: Any) -> Any:
    """A JSON-able copy of dataclasses, datetimes, dicts, lists and tuples (dict keys become strings)."""
    if is_dataclass(value):
        return {f.name: encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def _known(cls, data: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def decode_instrument(data: dict) -> Instrument:
    return Instrument(**_known(Instrument, data))


def decode_order(data: dict) -> Order:
    d = _known(Order, data)
    d['instrument'] = decode_instrument(d['instrument'])
    d['algoParams'] = [tuple(p) for p in d.get('algoParams', [])]
    for name in ('createdAt', 'completedAt', 'expiresAt'):
        if name in d:
            d[name] = _time(d[name])
    return Order(**d)


def decode_execution(data: dict) -> Execution:
    d = _known(Execution, data)
    d['instrument'] = decode_instrument(d['instrument'])
    d['time'] = _time(d['time'])
    return Execution(**d)


def decode_account(data: dict) -> Account:
    d = _known(Account, data)
    positions = {}
    for key, p in d.get('positions', {}).items():
        p = _known(Position, p)
        p['instrument'] = decode_instrument(p['instrument'])
        positions[int(key)] = Position(**p)
    d['positions'] = positions
    return Account(**d)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as JSON so that `path` always holds either the old or the new complete file.

    The text goes to a temporary file in the same directory, is fsynced, then renamed over `path`.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f'.{target.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f, separators=(',', ':'))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)
