"""Publishes result documents on the results topic, or prints them when no topic is configured.

One PublisherClient per process, created on first use (after gunicorn's fork, never at import)
and shared by all invocation threads; the client honours PUBSUB_EMULATOR_HOST by itself.
"""
from __future__ import annotations

import sys
import threading

from google.api_core.retry import Retry
from google.cloud import pubsub_v1

from functions.contract import IntentResult
from lib import log
from lib.config import ConfigError, Settings

_client: pubsub_v1.PublisherClient | None = None
_client_lock = threading.Lock()


class PublishFailed(RuntimeError):
    """The results topic did not acknowledge the result in time."""


def publisher_client() -> pubsub_v1.PublisherClient:
    """The process-wide PublisherClient, created on first call."""
    global _client
    with _client_lock:
        if _client is None:
            # One message per invocation, awaited at once: batching would only add its 10 ms wait.
            _client = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1))
        return _client


def topic_path(settings: Settings) -> str:
    """`projects/P/topics/T` from RESULTS_TOPIC, which is either that path or a topic id."""
    topic = settings.results_topic
    if not topic:
        raise ConfigError('RESULTS_TOPIC is not set')
    if topic.startswith('projects/'):
        parts = topic.split('/')
        if len(parts) != 4 or parts[2] != 'topics' or not parts[1] or not parts[3]:
            raise ConfigError(f'RESULTS_TOPIC={topic!r} is invalid: expected a topic id or projects/P/topics/T')
        return topic
    if '/' in topic:
        raise ConfigError(f'RESULTS_TOPIC={topic!r} is invalid: expected a topic id or projects/P/topics/T')
    if not settings.project:
        raise ConfigError(f'RESULTS_TOPIC={topic!r} is a topic id, so GOOGLE_CLOUD_PROJECT must be set')
    return f'projects/{settings.project}/topics/{topic}'


def result_attributes(result: IntentResult) -> dict[str, str]:
    """Message attributes subscribers can filter on: intent, status, runId, messageId."""
    attributes = {'intent': result.intent, 'status': result.status,
                  'runId': result.run_id, 'messageId': result.message_id}
    return log.mask({key: value for key, value in attributes.items() if value})


def publish_result(result: IntentResult, settings: Settings) -> None:
    """Publish on the results topic and wait for the ack, or print one JSON line without a topic.

    Secret values are masked in the document and its attributes, printed or published (lib.log.mask_json).

    Raises PublishFailed when the topic does not acknowledge within settings.publish_timeout.
    """
    if not settings.results_topic:
        # stdout is a log stream in the cloud, so it gets the same secret masking as log lines
        sys.stdout.write(log.mask_json(result.to_json()) + '\n')
        sys.stdout.flush()
        return
    topic = topic_path(settings)
    retry = Retry(timeout=settings.publish_timeout)
    try:
        document = log.mask_json(result.to_json())
        future = publisher_client().publish(topic, document.encode('utf-8'), retry=retry,
                                            timeout=settings.publish_timeout, **result_attributes(result))
        future.result(timeout=settings.publish_timeout)
    except Exception as exc:   # any failure to get the ack means the result may be lost
        raise PublishFailed(f'publishing to {topic} failed: {type(exc).__name__}: {exc}') from exc
