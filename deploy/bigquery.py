"""Optional BigQuery subscription on the results topic: one row per result document.

The table's columns are derived from schemas/intent-result.schema.json, so they match the result
contract field for field (`result`, whose shape depends on the intent, is a JSON column), plus the
metadata columns a BigQuery subscription writes with `--write-metadata`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploy.config import REPO, DeployConfig
from deploy.identity import pubsub_agent_member
from deploy.steps import Always, Arg, Command, Ensure, Remove, Step, WriteFile, gcloud

RESULT_SCHEMA = REPO / 'schemas' / 'intent-result.schema.json'
METADATA_COLUMNS = [
    {'name': 'subscription_name', 'type': 'STRING', 'mode': 'NULLABLE'},
    {'name': 'message_id', 'type': 'STRING', 'mode': 'NULLABLE'},
    {'name': 'publish_time', 'type': 'TIMESTAMP', 'mode': 'NULLABLE'},
    {'name': 'attributes', 'type': 'JSON', 'mode': 'NULLABLE'},
]
_SCALARS = {'string': 'STRING', 'integer': 'INTEGER', 'number': 'FLOAT', 'boolean': 'BOOLEAN'}


def table_schema(result_schema: dict[str, Any]) -> list[dict[str, Any]]:
    """BigQuery columns for the result document's JSON Schema, then the metadata columns."""
    definitions = result_schema.get('$defs', {})
    return [_column(name, spec, definitions) for name, spec in result_schema['properties'].items()] + METADATA_COLUMNS


def _column(name: str, spec: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    options = [option for option in spec.get('anyOf', [spec]) if option.get('type') != 'null']
    if len(options) != 1:
        raise ValueError(f'{name}: cannot map {spec} to one BigQuery type')
    option = options[0]
    if '$ref' in option:
        option = definitions[option['$ref'].rsplit('/', 1)[-1]]
    kind = option.get('type')
    if kind == 'object' and 'properties' in option:
        fields = [_column(child, child_spec, definitions) for child, child_spec in option['properties'].items()]
        return {'name': name, 'type': 'RECORD', 'mode': 'NULLABLE', 'fields': fields}
    if kind == 'object':
        return {'name': name, 'type': 'JSON', 'mode': 'NULLABLE'}
    if kind == 'string' and option.get('format') == 'date-time':
        return {'name': name, 'type': 'TIMESTAMP', 'mode': 'NULLABLE'}
    if kind in _SCALARS:
        return {'name': name, 'type': _SCALARS[kind], 'mode': 'NULLABLE'}
    raise ValueError(f'{name}: no BigQuery type for {option}')


def _bq(cfg: DeployConfig, *args: Arg) -> Command:
    return Command((f'--project_id={cfg.project}', '--quiet', *args), program='bq')


def bigquery_steps(cfg: DeployConfig, work_dir: Path) -> list[Step]:
    """Dataset, table, the Pub/Sub agent's write access, and the subscription; none without BIGQUERY_TABLE."""
    if not cfg.bigquery_table:
        return []
    dataset, table = cfg.bigquery_table.split('.')
    qualified = f'{cfg.project}:{dataset}.{table}'
    schema_file = work_dir / 'results-table-schema.json'
    schema = table_schema(json.loads(RESULT_SCHEMA.read_text()))
    return [
        WriteFile('BigQuery table schema', schema_file, json.dumps(schema, indent=2) + '\n'),
        Ensure(f'BigQuery dataset {dataset}',
               probe=_bq(cfg, 'show', '--format=none', f'{cfg.project}:{dataset}'),
               create=(_bq(cfg, 'mk', '--dataset', f'--location={cfg.region}', f'{cfg.project}:{dataset}'),)),
        Ensure(f'BigQuery table {dataset}.{table}',
               probe=_bq(cfg, 'show', '--format=none', qualified),
               create=(_bq(cfg, 'mk', '--table', '--time_partitioning_field=startedAt', qualified, str(schema_file)),),
               update=(_bq(cfg, 'update', qualified, str(schema_file)),)),
        Always(f'Pub/Sub may write {dataset}.{table}', (
            _bq(cfg, 'add-iam-policy-binding', pubsub_agent_member(), '--role=roles/bigquery.dataEditor', qualified),
        )),
        Ensure(f'subscription {cfg.bigquery_subscription}',
               probe=gcloud(cfg.project, 'pubsub', 'subscriptions', 'describe', cfg.bigquery_subscription),
               create=(gcloud(cfg.project, 'pubsub', 'subscriptions', 'create', cfg.bigquery_subscription,
                              f'--topic={cfg.results_topic}', f'--bigquery-table={qualified}',
                              '--use-table-schema', '--write-metadata'),)),
    ]


def remove_bigquery(cfg: DeployConfig) -> list[Step]:
    """Delete the BigQuery subscription; the table and its rows stay (they are data, not wiring)."""
    if not cfg.bigquery_table:
        return []
    return [Remove(f'subscription {cfg.bigquery_subscription}',
                   probe=gcloud(cfg.project, 'pubsub', 'subscriptions', 'describe', cfg.bigquery_subscription),
                   delete=(gcloud(cfg.project, 'pubsub', 'subscriptions', 'delete', cfg.bigquery_subscription),))]
