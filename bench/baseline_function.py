"""functions-framework source serving `summary` from the persistent-connection baseline.

    functions-framework --source bench/baseline_function.py --target run_summary

Each server process opens one PersistentGateway on its first request (after gunicorn's fork) and
every request thread hands its job to it, as the design note's web endpoint does.
"""
import json
import os
import sys
import threading

import functions_framework

import lib.ibapi  # noqa: F401  (main thread import, see lib/ibapi.py)
from bench.baseline import PersistentGateway
from functions.contract import decode_message

_gateway: PersistentGateway | None = None
_gateway_lock = threading.Lock()


def shared_gateway() -> PersistentGateway:
    """The process's one persistent connection, opened on first use."""
    global _gateway
    with _gateway_lock:
        if _gateway is None:
            _gateway = PersistentGateway(os.environ['IB_GATEWAY_HOST'], int(os.environ['IB_GATEWAY_PORT'])).start()
        return _gateway


@functions_framework.cloud_event
def run_summary(cloud_event) -> None:
    """Queue a `summary` job on the persistent connection, wait for it, print the result as one JSON line."""
    decoded = decode_message(cloud_event)
    result = shared_gateway().summary()
    sys.stdout.write(json.dumps({'schema': 'baseline-result/v1', 'messageId': decoded.message_id, 'status': 'ok',
                                 'result': result}) + '\n')
    sys.stdout.flush()
