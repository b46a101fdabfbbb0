"""A local webhook sink for the local stack: `python -m deploy.local_sink --port 0 --record FILE`.

It answers every POST with 200, prints the message it carries (the `text` of the notify function's JSON
webhook body) as it arrives, and appends each request as one JSON line to FILE ({"path", "body"}), which
`python -m deploy.local_stack received` prints. Prints "listening on http://127.0.0.1:PORT" first.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _Sink

    def do_POST(self) -> None:   # noqa: N802 (http.server's name)
        raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode('utf-8', 'replace')
        self.server.keep({'path': self.path, 'body': body})
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Sink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, record: Path) -> None:
        super().__init__((host, port), _Handler)
        self.record = record
        self.lock = threading.Lock()

    def keep(self, request: dict[str, Any]) -> None:
        with self.lock:
            with self.record.open('a', encoding='utf-8') as out:
                out.write(json.dumps(request, ensure_ascii=False) + '\n')
            body = request['body']
            text = body.get('text') if isinstance(body, dict) else body
            print(f'--- {request["path"]}\n{text}', flush=True)


def received(record: Path) -> list[dict[str, Any]]:
    """What the sink recorded, oldest first: [{"path", "body"}]."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text(encoding='utf-8').splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m deploy.local_sink', description=__doc__.split('\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--record', type=Path, required=True, help='append each request here as a JSON line')
    args = parser.parse_args(argv)
    sink = _Sink(args.host, args.port, args.record)
    print(f'listening on http://{args.host}:{sink.server_address[1]}', flush=True)
    try:
        sink.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
