"""A process that handles one Pub/Sub message through the real handler, for tests that kill it mid-run.

Started ahead of time (the imports take a while), it reads one JSON line on stdin:
{"env": {...}, "request": {...}, "messageId": "...", "publishTime": "...", "gateway": [host, port],
"deadline": seconds}, sets the environment variables, prints "handling" and handles the message;
the result goes to stdout like the function's. A test SIGKILLs it once the gateway has seen its orders:
the claim it took stays in the store, as when a function instance dies.
"""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from types import SimpleNamespace


def main() -> None:
    from functions.handler import TransientFailure, handle
    from lib import log
    from tests.pubsub_events import request_event
    from tests.reliability.harness import settings_for

    log.configure(json=True)
    print('ready', flush=True)
    order = json.loads(sys.stdin.readline())
    os.environ.update(order['env'])
    host, port = order['gateway']
    gateway = SimpleNamespace(host=host, port=port)
    event = request_event(order['request'], message_id=order['messageId'],
                          published=datetime.fromisoformat(order['publishTime']))
    print('handling', flush=True)
    try:
        handle(event, settings_for(gateway, deadline_seconds=order['deadline']))
    except TransientFailure:
        pass


if __name__ == '__main__':
    main()
