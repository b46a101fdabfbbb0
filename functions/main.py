"""The Cloud Function entry points: one Pub/Sub CloudEvent in each.

`run_intent` (topic `intents`): runs the intent the message names and publishes its result.
`notify_result` (topic `results`): sends a result to the configured sinks (functions/notify.py).
"""
import functions_framework

import lib.ibapi  # noqa: F401  (imported here, in the main thread: eventkit binds the event loop at import)
from functions.handler import handle
from functions.notify import notify


@functions_framework.cloud_event
def run_intent(cloud_event) -> None:
    """Run the intent the message names; raising makes Pub/Sub deliver the message again."""
    handle(cloud_event)


@functions_framework.cloud_event
def notify_result(cloud_event) -> None:
    """Send the result to every configured sink not yet sent; raising makes Pub/Sub deliver it again."""
    notify(cloud_event)
