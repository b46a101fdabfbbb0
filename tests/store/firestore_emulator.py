"""The gcloud Firestore emulator for tests, started on a free 127.0.0.1 port in its own process group."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.emulators import Process, free_port, spawn

EMULATOR_ENV = 'FIRESTORE_EMULATOR_HOST'


@dataclass
class FirestoreEmulator:
    """A running Firestore emulator; `process` is None when an already running one is reused."""

    host: str                 # host:port
    process: Process | None = None

    @classmethod
    def start(cls, log_dir: Path, timeout: float = 60.0) -> FirestoreEmulator:
        """Start `gcloud emulators firestore start` on a free port and wait until GET / says Ok."""
        host = f'127.0.0.1:{free_port()}'
        command = [shutil.which('gcloud') or 'gcloud', 'emulators', 'firestore', 'start',
                   f'--host-port={host}', '--quiet']
        process = spawn(command, env=dict(os.environ), log_dir=log_dir, name='firestore-emulator')
        process.wait_until(f'http://{host}/', lambda status, body: status == 200 and body.strip() == 'Ok',
                           timeout, 'Firestore emulator')
        return cls(host, process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
