"""A stand-in for `gcloud` and `bq` that keeps a tiny model of a project in a JSON file.

Run as `fake_gcloud.py PROGRAM ARGS...` (tests put `gcloud` and `bq` shims first on PATH). Every
call is appended to calls.jsonl (argv and standard input) in $FAKE_CLOUD_DIR. Resources exist once
created: `create` on an existing one fails with ALREADY_EXISTS and `describe`, `update` and `delete`
on a missing one fail with NOT_FOUND, as the real tools do, so a plan that is not idempotent fails
here too. IAM bindings are recorded per resource and vanish with it. A command line containing
$FAKE_GCLOUD_FAIL fails with PERMISSION_DENIED (or $FAKE_GCLOUD_FAIL_MESSAGE).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

VERBS = ('describe', 'create', 'update', 'delete', 'list', 'deploy', 'enable', 'add-iam-policy-binding',
         'remove-iam-policy-binding', 'add-invoker-policy-binding', 'add-metadata', 'access', 'add',
         'mk', 'show')
PROJECT_NUMBER = '123456789012'
GATEWAY_IP = '10.128.0.9'


def main(program: str, argv: list[str]) -> int:
    root = Path(os.environ['FAKE_CLOUD_DIR'])
    stdin = '' if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    with open(root / 'calls.jsonl', 'a') as calls:
        calls.write(json.dumps({'program': program, 'argv': argv, 'stdin': stdin}) + '\n')
    failing = os.environ.get('FAKE_GCLOUD_FAIL')
    if failing and failing in ' '.join([program, *argv]):
        return _fail(os.environ.get('FAKE_GCLOUD_FAIL_MESSAGE',
                                    'PERMISSION_DENIED: the caller does not have permission'))
    state_path = root / 'state.json'
    state = json.loads(state_path.read_text()) if state_path.exists() else {
        'resources': {}, 'bindings': [], 'secret_versions': {}, 'services': []}
    code = Cloud(state, program).run(argv, stdin)
    state_path.write_text(json.dumps(state, indent=2, sort_keys=True))
    return code


def _fail(message: str) -> int:
    print(f'ERROR: {message}', file=sys.stderr)
    return 1


class Cloud:
    def __init__(self, state: dict, program: str) -> None:
        self.state, self.program = state, program
        self.resources: dict[str, dict] = state['resources']

    def run(self, argv: list[str], stdin: str) -> int:
        flags = {arg[2:].split('=', 1)[0]: (arg.split('=', 1)[1] if '=' in arg else True)
                 for arg in argv if arg.startswith('--')}
        words = [arg for arg in argv if not arg.startswith('--')]
        if self.program == 'bq':
            return self.bq(words, flags)
        verb_at = next(i for i, word in enumerate(words) if word in VERBS)
        group, verb, rest = words[:verb_at], words[verb_at], words[verb_at + 1:]
        if group == ['scheduler', 'jobs'] and rest[:1] == ['http']:
            rest = rest[1:]
        name = flags.get('database') if group == ['firestore', 'databases'] else (rest[0] if rest else '')
        kind = ' '.join(group)
        if kind == 'iam service-accounts' and '@' not in name:
            name = f'{name}@{flags["project"]}.iam.gserviceaccount.com'
        if verb == 'enable':
            self.state['services'] = sorted(set(self.state['services']) | set(rest))
            return 0
        if kind == 'secrets versions':
            return self.secret_version(verb, flags.get('secret') or name, stdin)
        if verb == 'list':
            return self.listing(kind, flags)
        if verb in ('add-iam-policy-binding', 'remove-iam-policy-binding', 'add-invoker-policy-binding'):
            return self.binding(kind, name, verb, flags)
        if kind == 'alpha monitoring policies':
            return self.policy(verb, name, flags)
        if kind == 'firestore fields ttls':   # a setting of a field in an existing database, not a resource
            database = flags.get('database', '(default)')
            if f'firestore databases/{database}' not in self.resources:
                return _fail(f'NOT_FOUND: database {database}')
            self.resources[f'{kind}/{database}/{flags["collection-group"]}/{name}'] = {'argv': argv}
            return 0
        key = f'{kind}/{name}'
        if verb == 'describe':
            return self.describe(kind, key, name, flags)
        if verb in ('create', 'deploy'):
            if verb == 'create' and key in self.resources:
                return _fail(f'ALREADY_EXISTS: {key} already exists')
            self.resources[key] = {'argv': argv}
            if kind == 'functions':
                self.resources[self.trigger_subscription_key(name)] = {'argv': []}
            return 0
        if key not in self.resources:
            return _fail(f'NOT_FOUND: {key} was not found')
        if verb == 'delete':
            self.delete(key)
            if kind == 'functions':
                self.delete(self.trigger_subscription_key(name))
            return 0
        self.resources[key].setdefault('updates', []).append(argv)
        return 0

    def describe(self, kind: str, key: str, name: str, flags: dict) -> int:
        fmt = flags.get('format', '')
        if kind == 'projects':
            print(PROJECT_NUMBER if 'projectNumber' in fmt else f'projectId: {name}')
            return 0
        if kind == 'eventarc triggers':
            function = name.rsplit('/', 1)[-1].rsplit('-trigger', 1)[0]
            if f'functions/{function}' not in self.resources:
                return _fail(f'NOT_FOUND: trigger {name}')
            print(self.trigger_subscription_key(function).split('/', 1)[1])
            return 0
        if key not in self.resources:
            return _fail(f'NOT_FOUND: {key} was not found')
        if 'value(address)' in fmt:
            print(GATEWAY_IP)
        elif 'eventTrigger.trigger' in fmt:
            print(f'projects/p/locations/r/triggers/{name}-trigger')
        else:
            print(f'name: {name}')
        return 0

    def trigger_subscription_key(self, function: str) -> str:
        return f'pubsub subscriptions/projects/p/subscriptions/eventarc-{function}-sub-001'

    def delete(self, key: str) -> None:
        self.resources.pop(key, None)
        if key.startswith('firestore databases/'):   # its fields' settings go with it
            database = key.split('/', 1)[1]
            for setting in [k for k in self.resources if k.startswith(f'firestore fields ttls/{database}/')]:
                self.resources.pop(setting)
        self.state['bindings'] = [b for b in self.state['bindings'] if b['resource'] != key]

    def binding(self, kind: str, name: str, verb: str, flags: dict) -> int:
        key = f'{kind}/{name}'
        if kind != 'projects' and key not in self.resources:
            return _fail(f'NOT_FOUND: {key} was not found')
        role = 'roles/run.invoker' if verb == 'add-invoker-policy-binding' else flags['role']
        binding = {'resource': key, 'member': flags['member'], 'role': role,
                   'condition': flags.get('condition') if flags.get('condition') != 'None' else None}
        bindings = self.state['bindings']
        if verb == 'remove-iam-policy-binding':
            if binding not in bindings:
                return _fail('Policy binding with the specified principal, role, and condition not found!')
            bindings.remove(binding)
        elif binding not in bindings:
            bindings.append(binding)
        return 0

    def secret_version(self, verb: str, secret: str, stdin: str) -> int:
        if f'secrets/{secret}' not in self.resources:
            return _fail(f'NOT_FOUND: secret {secret}')
        versions = self.state['secret_versions'].setdefault(secret, [])
        if verb == 'add':
            versions.append(stdin)
            return 0
        if not versions:
            return _fail(f'NOT_FOUND: secret {secret} has no versions')
        sys.stdout.write(versions[-1])
        return 0

    def listing(self, kind: str, flags: dict) -> int:
        if kind == 'scheduler jobs':
            prefix = flags.get('filter', '').split('/jobs/', 1)[-1]
            for key in self.resources:
                if key.startswith(f'scheduler jobs/{prefix}'):
                    print(key.split('/', 1)[1])
        elif kind == 'alpha monitoring policies':
            wanted = flags.get('filter', '').split('=', 1)[-1].strip('"')
            for key, resource in self.resources.items():
                if key.startswith('alpha monitoring policies/') and resource['displayName'] == wanted:
                    print(key.split('/', 1)[1])
        return 0

    def policy(self, verb: str, name: str, flags: dict) -> int:
        if verb == 'create':
            document = json.loads(Path(flags['policy-from-file']).read_text())
            number = sum(key.startswith('alpha monitoring policies/') for key in self.resources) + 1
            self.resources[f'alpha monitoring policies/projects/p/alertPolicies/{number}'] = {
                'displayName': document['displayName'], 'document': document}
            return 0
        key = f'alpha monitoring policies/{name}'
        if key not in self.resources:
            return _fail(f'NOT_FOUND: {name}')
        if verb == 'delete':
            self.delete(key)
        else:
            self.resources[key]['document'] = json.loads(Path(flags['policy-from-file']).read_text())
        return 0

    def bq(self, words: list[str], flags: dict) -> int:
        verb = words[0]
        name = next(word for word in words[1:] if ':' in word)
        key = f'bq/{name}'
        if verb == 'show':
            return 0 if key in self.resources else _bq_fail(verb, f'Not found: {name}')
        if verb == 'mk':
            if key in self.resources:
                return _bq_fail(verb, f'Already Exists: {name}')
            self.resources[key] = {'argv': words}
            return 0
        if verb == 'add-iam-policy-binding':
            self.state['bindings'].append({'resource': key, 'member': flags['member'], 'role': flags['role'],
                                           'condition': None})
            return 0
        return 0 if key in self.resources else _bq_fail(verb, f'Not found: {name}')


def _bq_fail(verb: str, message: str) -> int:
    # bq prints its errors on standard output, exit 2 for not found and already exists
    # (platform/bq/utils/bq_error_utils.py ProcessError)
    print(f'BigQuery error in {verb} operation: {message}')
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1], sys.argv[2:]))
