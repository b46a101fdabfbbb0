"""Run history: every published result is also kept in the store, for `python -m functions history|show`.

Kept for RUN_HISTORY_DAYS (default 30; 0 keeps nothing; lib.config.HistorySettings) in the configured store: the SQLite file
locally, Firestore in the cloud (collection `history`, deleted by a TTL policy on `expireAt`).
Recording is best effort: the result is already published, so a store that fails only costs the
history entry (logged), never the run. Documents are masked for secrets like every other output.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from functions.contract import IntentResult
from lib import log
from lib.config import ConfigError, Settings, StoreSettings
from lib.store import StoreUnavailable, open_store

logger = log.get_logger(__name__)

# A document above this is kept without its `result` (Firestore documents hold at most 1 MiB).
MAX_DOCUMENT_BYTES = 512_000


def record(result: IntentResult, settings: Settings, now: datetime | None = None) -> None:
    """Keep `result` in the store's history; failures are logged, never raised."""
    try:
        days = settings.history.checked().days
        if days == 0:
            return
        document = log.mask_json(result.to_json())
        if len(document.encode('utf-8')) > MAX_DOCUMENT_BYTES:
            trimmed = {**json.loads(document), 'result': {'truncated': True,
                                                          'reason': 'too large for the history; see the results topic'}}
            document = json.dumps(trimmed, ensure_ascii=False, separators=(',', ':'))
        finished = result.finished_at
        open_store(settings.store).record_run(result.run_id, result.intent, result.status, finished, document,
                                (now or finished) + timedelta(days=days))
    except (StoreUnavailable, ConfigError, ValueError, TypeError) as exc:
        logger.warning('result of run %s not kept in the history: %s', result.run_id, exc)


def recent(store: StoreSettings, limit: int, intent: str | None = None, now: datetime | None = None) -> list[dict]:
    """The newest `limit` results kept (of `intent` only, when given), newest first."""
    return open_store(store).recent_runs(limit, now or datetime.now(timezone.utc), intent)


def find(store: StoreSettings, run_id: str) -> dict | None:
    """One kept result by its runId, or None."""
    return open_store(store).get_run(run_id)
