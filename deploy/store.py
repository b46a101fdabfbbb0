"""The store: a Firestore (native mode) database with delete protection."""
from __future__ import annotations

from deploy.config import DeployConfig
from deploy.steps import Ensure, Remove, Step, gcloud


def store_steps(cfg: DeployConfig) -> list[Step]:
    """Create the database when missing; an existing one is left as it is."""
    database = f'--database={cfg.firestore_database}'
    return [Ensure(f'Firestore database {cfg.firestore_database}',
                   probe=gcloud(cfg.project, 'firestore', 'databases', 'describe', database),
                   create=(gcloud(cfg.project, 'firestore', 'databases', 'create', database,
                                  f'--location={cfg.firestore_location}', '--type=firestore-native',
                                  '--delete-protection'),))]


def remove_store(cfg: DeployConfig) -> list[Step]:
    """Lift the delete protection, then delete the database and everything in it."""
    database = f'--database={cfg.firestore_database}'
    return [Remove(f'Firestore database {cfg.firestore_database}',
                   probe=gcloud(cfg.project, 'firestore', 'databases', 'describe', database),
                   delete=(gcloud(cfg.project, 'firestore', 'databases', 'update', database, '--no-delete-protection'),
                           gcloud(cfg.project, 'firestore', 'databases', 'delete', database)))]
