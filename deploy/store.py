"""The store: a Firestore (native mode) database with delete protection, and the TTL policies of the run history,
the notification delivery records and the plans waiting for approval."""
from __future__ import annotations

from deploy.config import DeployConfig
from deploy.steps import Always, Ensure, Remove, Step, gcloud
from lib.store.common import DELIVERIES_COLLECTION, HISTORY_COLLECTION, HISTORY_EXPIRY_FIELD, PLANS_COLLECTION


def store_steps(cfg: DeployConfig) -> list[Step]:
    """Create the database when missing (an existing one is left as it is), then make Firestore delete run
    history, delivery and plan documents once their expiry time has passed. Setting the TTL policy again is
    harmless; `--async` because Firestore may take minutes to apply it to an existing collection
    (`gcloud firestore fields ttls list --database=...` shows its state).
    """
    database = f'--database={cfg.firestore_database}'
    return [Ensure(f'Firestore database {cfg.firestore_database}',
                   probe=gcloud(cfg.project, 'firestore', 'databases', 'describe', database),
                   create=(gcloud(cfg.project, 'firestore', 'databases', 'create', database,
                                  f'--location={cfg.firestore_location}', '--type=firestore-native',
                                  '--delete-protection'),)),
            *(Always(f'TTL policy: {group} documents expire at their {HISTORY_EXPIRY_FIELD}',
                     (gcloud(cfg.project, 'firestore', 'fields', 'ttls', 'update', HISTORY_EXPIRY_FIELD,
                             f'--collection-group={group}', '--enable-ttl', database, '--async'),))
              for group in (HISTORY_COLLECTION, DELIVERIES_COLLECTION, PLANS_COLLECTION))]


def remove_store(cfg: DeployConfig) -> list[Step]:
    """Lift the delete protection, then delete the database and everything in it."""
    database = f'--database={cfg.firestore_database}'
    return [Remove(f'Firestore database {cfg.firestore_database}',
                   probe=gcloud(cfg.project, 'firestore', 'databases', 'describe', database),
                   delete=(gcloud(cfg.project, 'firestore', 'databases', 'update', database, '--no-delete-protection'),
                           gcloud(cfg.project, 'firestore', 'databases', 'delete', database)))]
