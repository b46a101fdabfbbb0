"""A results topic on the Pub/Sub emulator for the benchmarks that publish."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from google.cloud import pubsub_v1

from tests.emulators import PubSubEmulator

PROJECT = 'bench'


class ResultsTopic:
    """A results topic on a Pub/Sub emulator (the one PUBSUB_EMULATOR_HOST names, else one started here).

    Entered, it yields the topic id, or None when not enabled; on exit the topic is deleted and a
    started emulator stopped.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.emulator: PubSubEmulator | None = None
        self.data_dir: str | None = None
        self.topic_path: str | None = None

    def __enter__(self) -> str | None:
        if not self.enabled:
            return None
        if os.environ.get('PUBSUB_EMULATOR_HOST'):
            PubSubEmulator(os.environ['PUBSUB_EMULATOR_HOST'], PROJECT).wait_ready()
        else:
            self.data_dir = tempfile.mkdtemp(prefix='bench-pubsub-')
            self.emulator = PubSubEmulator.start(Path(self.data_dir), PROJECT)
            os.environ['PUBSUB_EMULATOR_HOST'] = self.emulator.host
        topic = f'bench-results-{uuid.uuid4().hex[:8]}'
        client = pubsub_v1.PublisherClient()
        self.topic_path = client.topic_path(PROJECT, topic)
        client.create_topic(name=self.topic_path)
        return topic

    def __exit__(self, *exc) -> None:
        if self.topic_path is not None and self.emulator is None:
            pubsub_v1.PublisherClient().delete_topic(topic=self.topic_path)
        if self.emulator is not None:
            self.emulator.stop()
            os.environ.pop('PUBSUB_EMULATOR_HOST', None)
            shutil.rmtree(self.data_dir, ignore_errors=True)
