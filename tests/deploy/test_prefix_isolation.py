"""Paper beside live in one project: two deploys with different NAME_PREFIX share no resource.

Both plans run, one after the other, against one model project (tests/deploy/fake_gcloud.py's Cloud, in
process: a resource exists once created, so a second deploy that named a resource like the first would
find it and update it instead of making its own). Then the paper deploy is torn down and the live one
must be untouched.
"""
from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

from deploy.config import config_from_values
from deploy.plan import apply_plan, teardown_plan
from deploy.runner import Runner
from deploy.schedules import load_jobs
from tests.deploy.conftest import REPO
from tests.deploy.fake_gcloud import Cloud

PROJECT = 'demo-proj-123'
# every kind of resource the issue names, as the model project keys them
KINDS = ('pubsub topics', 'pubsub subscriptions', 'iam service-accounts', 'firestore databases', 'scheduler jobs',
         'logging metrics', 'alpha monitoring policies', 'secrets', 'compute firewall-rules',
         'compute networks vpc-access connectors')


class ModelProjectRunner(Runner):
    """The deploy's runner with each gcloud command answered by the model project instead of a process."""

    def __init__(self, state: dict, secrets: dict[str, str]) -> None:
        super().__init__(secrets=secrets, dry_run=False, out=io.StringIO(), cwd=REPO, retry_delays=())
        self.state = state

    def _call(self, command):
        argv = [self._resolve(arg) for arg in command.args]
        self._refuse_secrets(argv)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = Cloud(self.state, command.program).run(
                argv, self.secrets[command.stdin_secret] if command.stdin_secret else '')
        return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def config(prefix: str, **settings: str):
    return config_from_values({'PROJECT': PROJECT, 'NAME_PREFIX': prefix, **settings},
                              environ={'IB_USERNAME': f'{prefix}-user', 'IB_PASSWORD': f'{prefix}-pw-x9'})


def names(state: dict) -> dict[str, set[str]]:
    """kind -> names of the resources the project holds (alert policies by display name)."""
    found: dict[str, set[str]] = {}
    for key, resource in state['resources'].items():
        kind, _, name = key.partition('/')
        found.setdefault(kind, set()).add(resource.get('displayName') or name)
    return found


def test_paper_and_live_deploys_share_no_resource_and_tearing_one_down_leaves_the_other(tmp_path: Path):
    paper = config('ib-paper')
    live = config('ib-live', TRADING_MODE='live', ALLOW_LIVE_TRADING='true', CONNECTOR_RANGE='10.8.0.16/28')
    state: dict = {'resources': {}, 'bindings': [], 'secret_versions': {}, 'services': []}

    ModelProjectRunner(state, dict(paper.secret_values)).run(
        apply_plan(paper, load_jobs(paper.schedules_file), tmp_path / 'paper'))
    paper_names = names(state)
    paper_resources = {key: repr(value) for key, value in state['resources'].items()}
    assert set(KINDS) <= set(paper_names), f'kinds the plan made: {sorted(paper_names)}'

    ModelProjectRunner(state, dict(live.secret_values)).run(
        apply_plan(live, load_jobs(live.schedules_file), tmp_path / 'live'))
    both = names(state)
    live_names = {kind: both[kind] - paper_names.get(kind, set()) for kind in both}
    for kind in KINDS:
        shared = paper_names[kind] & live_names[kind]
        assert not shared and len(live_names[kind]) == len(paper_names[kind]), \
            f'{kind}: live made {sorted(live_names[kind])} beside paper {sorted(paper_names[kind])}'
    assert {key: repr(state['resources'][key]) for key in paper_resources} == paper_resources, \
        'the live deploy changed a resource of the paper deploy'
    assert 'ib-live' in both['firestore databases'] and 'ib-live-intents' in both['pubsub topics']

    live_resources = {key: repr(value) for key, value in state['resources'].items() if key not in paper_resources}
    live_bindings = [b for b in state['bindings'] if 'ib-live' in b['member'] or 'ib-live' in b['resource']]
    ModelProjectRunner(state, {}).run(teardown_plan(paper, delete_data=True))
    assert {key: repr(value) for key, value in state['resources'].items()} == live_resources
    assert [b for b in state['bindings'] if b in live_bindings] == live_bindings
    assert not any('ib-paper' in b['member'] or 'ib-paper' in b['resource'] for b in state['bindings'])


def test_explicit_names_still_override_the_prefix():
    cfg = config('ib-live', INTENTS_TOPIC='intents', RESULTS_TOPIC='results', FIRESTORE_DATABASE='ib-jobs')
    assert (cfg.intents_topic, cfg.results_topic, cfg.firestore_database) == ('intents', 'results', 'ib-jobs')
    assert cfg.dead_letter_topic == 'intents-dead-letter' and cfg.results_subscription == 'results-pull'
    derived = config('ib-live')
    assert (derived.intents_topic, derived.results_topic, derived.dead_letter_topic, derived.firestore_database) == (
        'ib-live-intents', 'ib-live-results', 'ib-live-intents-dead-letter', 'ib-live')
