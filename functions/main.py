"""The Cloud Function entry point: one Pub/Sub CloudEvent in, one result published."""
import functions_framework

import lib.ibapi  # noqa: F401  (imported here, in the main thread: eventkit binds the event loop at import)
from functions.handler import handle


@functions_framework.cloud_event
def run_intent(cloud_event) -> None:
    """Run the intent the message names; raising makes Pub/Sub deliver the message again."""
    handle(cloud_event)
