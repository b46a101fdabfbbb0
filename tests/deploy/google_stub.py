"""A small stand-in for every Google API the deploy's gcloud commands call, recording what they send.

Point the real gcloud at it with `GoogleStub.gcloud_env()`: a throwaway CLOUDSDK_CONFIG with
`api_endpoint_overrides/<api>` = this server (one path prefix per API, so a request names its API)
and `auth/disable_credentials`. Any other host gcloud tries goes to this server as an HTTP(S) proxy
and is refused at once and recorded in `unserved`, instead of gcloud retrying an unreachable Google
host for half a minute.

The stub keeps a map of resources by path. In mode `create` a GET of a resource nobody created
answers 404, so every command takes its create path; in mode `exists` such a GET answers a resource
built from the path (and a listing answers what `listings` holds for it), so the update path runs.
Whatever gcloud creates or patches is kept and read
back, long-running operations are answered done, `functions generateUploadUrl` hands out an upload
URL on this server, and the uploaded archive is kept in `uploads`.

`bq` is driven too: it refuses to run without an active account, so `activate_fake_account` activates a
service-account key made on the spot whose token endpoint is this server (gcloud's `auth/token_host` points
here as well), `BIGQUERYRC` sets bq's `api` to this server, and bq's discovery request
(`<api>/$discovery/rest?version=v2`, bq's utils/bq_api_utils.py) is answered with the discovery document the
SDK bundles for bq (platform/bq/discovery_next/bigquery.json: the one bq itself loads when it talks to
Google's endpoint); bq then replaces its rootUrl with `api` (BigqueryClient.OverrideEndpoint).

To serve a new API: add it to APIS (its override name and the path prefix its requests carry) and,
where its answers differ from the generic resource store, a case in `_Handler._special`.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# gcloud's api_endpoint_overrides names; each gets the base URL http://127.0.0.1:PORT/<name>/
APIS = ('cloudfunctions', 'compute', 'pubsub', 'cloudscheduler', 'secretmanager', 'iam', 'firestore', 'logging',
        'monitoring', 'eventarc', 'serviceusage', 'cloudresourcemanager', 'vpcaccess', 'run', 'artifactregistry',
        'cloudbuild', 'storage', 'bigquery')
PROJECT_NUMBER = '123456789012'
GATEWAY_IP = '10.128.0.9'
FAKE_ACCOUNT = 'deployer@demo-proj-123.iam.gserviceaccount.com'


def sdk_root() -> Path:
    """The Google Cloud SDK's root: the directory above gcloud's bin/."""
    gcloud = shutil.which('gcloud')
    assert gcloud is not None, 'gcloud is not on PATH'
    return Path(os.path.realpath(gcloud)).parent.parent


@dataclass
class Request:
    """One request gcloud sent: its API, method, path below the API's prefix, query and body."""

    api: str
    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        return f'{self.api} {self.method} {self.path}'


@dataclass
class Recorded:
    """Requests gcloud sent during one run, and the archives it uploaded."""

    requests: list[Request]
    uploads: dict[str, bytes]

    def sent(self, api: str, method: str, pattern: str) -> list[Request]:
        """Recorded requests to `api` with `method` whose path matches the regular expression `pattern`."""
        return [r for r in self.requests if r.api == api and r.method == method and re.search(pattern, r.path)]

    def body_of(self, api: str, method: str, pattern: str) -> Any:
        """The body of the one request that matches."""
        found = self.sent(api, method, pattern)
        assert len(found) == 1, f'{len(found)} {api} {method} requests match {pattern!r}: {[str(r) for r in found]}'
        return found[0].body


@dataclass
class GoogleStub:
    """The server's state: mode, resources, recorded requests, uploads, refused hosts."""

    mode: str = 'create'
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    unserved: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # answers for listings in mode `exists`: {(api, path suffix): items}
    listings: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    # the first request whose "API METHOD PATH" is a key gets that (status, error body); a status of
    # 200 with a failed operation as the body makes that operation fail
    fail_once: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> GoogleStub:
        self.server = ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        self.server.stub = self   # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f'http://127.0.0.1:{self.server.server_address[1]}'

    def gcloud_env(self, config_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment in which gcloud (and `bq`) talk to this server only."""
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / 'configurations').mkdir(exist_ok=True)
        (config_dir / 'active_config').write_text('default')
        overrides = ''.join(f'{api} = {self.url}/{api}/\n' for api in APIS)
        (config_dir / 'bigqueryrc').write_text(f'api = {self.url}\n')
        (config_dir / 'configurations' / 'config_default').write_text(
            f'[auth]\ndisable_credentials = true\ntoken_host = {self.url}/token\n'
            '[core]\ndisable_usage_reporting = true\ncheck_gce_metadata = false\n'
            '[component_manager]\ndisable_update_check = true\n'
            f'[api_endpoint_overrides]\n{overrides}')
        env = {key: value for key, value in (base if base is not None else os.environ).items()
               if not key.lower().endswith('_proxy') and not key.startswith('CLOUDSDK_')}
        return {**env, 'CLOUDSDK_CONFIG': str(config_dir), 'HTTPS_PROXY': self.url, 'HTTP_PROXY': self.url,
                'https_proxy': self.url, 'http_proxy': self.url, 'NO_PROXY': '127.0.0.1', 'no_proxy': '127.0.0.1',
                'CLOUDSDK_CORE_DISABLE_PROMPTS': '1', 'BIGQUERYRC': str(config_dir / 'bigqueryrc')}

    def activate_fake_account(self, env: dict[str, str]) -> None:
        """Make `bq` usable in `env` (from gcloud_env): activate a service-account key made now, with its
        token endpoint on this server. No real key or token exists anywhere."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        key_file = Path(env['CLOUDSDK_CONFIG']) / 'fake-key.json'
        key_file.write_text(json.dumps({
            'type': 'service_account', 'project_id': FAKE_ACCOUNT.split('@')[1].split('.')[0],
            'private_key_id': 'fake', 'private_key': pem, 'client_email': FAKE_ACCOUNT, 'client_id': '1',
            'token_uri': f'{self.url}/token'}))
        subprocess.run(['gcloud', 'auth', 'activate-service-account', f'--key-file={key_file}'], env=env,
                       check=True, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    def recorded(self, since: int = 0, until: int | None = None) -> Recorded:
        """What gcloud sent from request number `since` up to `until` (take `len(stub.requests)` between runs)."""
        with self.lock:
            return Recorded(self.requests[since:until], dict(self.uploads))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    @property
    def stub(self) -> GoogleStub:
        return self.server.stub   # type: ignore[attr-defined]

    def log_message(self, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        self._refuse_host(self.path.split(':', 1)[0])

    def _refuse_host(self, host: str) -> None:
        with self.stub.lock:
            self.stub.unserved.append(host)
        self._send(403, {'error': {'code': 403, 'status': 'PERMISSION_DENIED',
                                   'message': f'the test stub does not serve {host}'}}, close=True)

    def _handle(self) -> None:
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        target = self.path
        if target.startswith('http://') or target.startswith('https://'):   # sent to us as a proxy
            parsed = urllib.parse.urlsplit(target)
            if parsed.hostname != '127.0.0.1':
                return self._refuse_host(parsed.hostname or target)
            target = urllib.parse.urlunsplit(('', '', parsed.path, parsed.query, ''))
        parsed = urllib.parse.urlsplit(target)
        api, _, path = parsed.path.lstrip('/').partition('/')
        query = dict(urllib.parse.parse_qsl(parsed.query))
        query.pop('alt', None)
        if api == 'upload':
            with self.stub.lock:
                self.stub.uploads[path] = raw
                self.stub.requests.append(Request('upload', self.command, path, query, raw))
            return self._send(200, {})
        body: Any = raw
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                pass
        if api == 'iam':   # gcloud names an account as projects/-/serviceAccounts/EMAIL: one resource, one key
            path = re.sub(r'^(v1/projects/)-(/serviceAccounts/[^/:@]+@([^.]+)\.)', r'\g<1>\3\2', path)
        request = Request(api, self.command, '/' + path, query, body)
        with self.stub.lock:
            self.stub.requests.append(request)
            try:
                status, answer = self._answer(request)
            except Exception:   # a bug in the stub: fail the command at once, and the test with it
                self.stub.errors.append(f'{request}: {traceback.format_exc()}')
                status, answer = 400, {'error': {'code': 400, 'status': 'FAILED_PRECONDITION',
                                                 'message': f'the test stub failed on {request}'}}
        self._send(status, answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _send(self, status: int, body: Any, close: bool = False) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json; charset=UTF-8')
        self.send_header('Content-Length', str(len(payload)))
        if close:
            self.send_header('Connection', 'close')
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    # --- answers ------------------------------------------------------------------------------

    def _answer(self, request: Request) -> tuple[int, Any]:
        for key, (status, error) in list(self.stub.fail_once.items()):
            if f'{request.api} {request.method} {request.path}' == key:
                del self.stub.fail_once[key]
                if status == 200 and error.get('done'):   # a failed operation: polling it fails too
                    self.stub.resources['operation:' + error['name']] = error
                return status, error
        special = self._special(request)
        if special is not None:
            return special
        return self._generic(request)

    def _special(self, r: Request) -> tuple[int, Any] | None:
        stub = self.stub
        p = r.path
        if r.api == 'token' and r.method == 'POST':   # OAuth token endpoint of the fake account
            return 200, {'access_token': 'stub-access-token', 'expires_in': 3600, 'token_type': 'Bearer'}
        if r.api == '$discovery' and r.method == 'GET' and p == '/rest':
            if r.query.get('version') != 'v2':
                return _not_found(f'$discovery/rest?version={r.query.get("version")}')
            return 200, json.loads((sdk_root() / 'platform' / 'bq' / 'discovery_next' / 'bigquery.json').read_text())
        if r.api == 'cloudfunctions' and p.endswith('/functions:generateUploadUrl'):
            return 200, {'uploadUrl': f'{stub.url}/upload/function-source.zip',
                         'storageSource': {'bucket': 'gcf-v2-uploads', 'object': 'function-source.zip'}}
        if r.api == 'cloudfunctions' and r.method == 'GET' and p.endswith('/runtimes'):
            return 200, {'runtimes': [{'name': 'python312', 'displayName': 'Python 3.12', 'stage': 'GA',
                                       'environment': 'GEN_2'}]}
        if r.api == 'cloudresourcemanager' and r.method == 'GET' and re.fullmatch(r'/v1/projects/[^/]+', p):
            project = p.rsplit('/', 1)[1]
            return 200, {'projectId': project, 'projectNumber': PROJECT_NUMBER, 'lifecycleState': 'ACTIVE'}
        if p.endswith(':getIamPolicy') or (r.method == 'GET' and p.endswith('/iamPolicy')):
            key = 'iam:' + p.rsplit(':', 1)[0]
            return 200, stub.resources.get(key, {'etag': 'BwYAAAA=', 'version': 1})
        if p.endswith(':setIamPolicy'):
            policy = r.body.get('policy', {}) if isinstance(r.body, dict) else {}
            stub.resources['iam:' + p.rsplit(':', 1)[0]] = policy
            return 200, policy
        if r.api == 'secretmanager' and p.endswith(':access'):
            if stub.mode == 'create' and not any(k.startswith(p.split('/versions/')[0] + '/versions/')
                                                 for k in stub.resources):
                return _not_found(p)
            return 200, {'name': p.rsplit(':', 1)[0].split('/', 2)[2],
                         'payload': {'data': base64.b64encode(b'an older value').decode()}}
        if r.api == 'secretmanager' and p.endswith(':addVersion'):
            key = p.rsplit(':', 1)[0] + '/versions/1'
            stub.resources[key] = {'name': key.split('/', 2)[2], 'state': 'ENABLED',
                                   'clientSpecifiedPayloadChecksum': True}
            return 200, stub.resources[key]
        if r.api == 'firestore' and r.method == 'PATCH' and re.search(r'/collectionGroups/[^/]+/fields/[^/]+$', p):
            return _firestore_field_patch(stub, r)
        if r.api == 'eventarc' and r.method == 'GET' and '/triggers/' in p:   # made with the function
            return 200, _existing(stub.url, r)
        if r.api == 'serviceusage' and r.method == 'GET' and '/services/' in p:
            return 200, {'name': p.lstrip('/').split('/', 1)[1], 'state': 'ENABLED'}
        if r.api == 'serviceusage' and p.endswith(':batchEnable'):
            return 200, _operation('operations/enable-1', {})
        if '/operations/' in p and r.method == 'GET' and 'operation:' + p.split('/', 2)[2] in stub.resources:
            return 200, stub.resources['operation:' + p.split('/', 2)[2]]
        if '/operations/' in p and r.method == 'GET':
            if r.api == 'compute':
                return 200, stub.resources[p]
            return 200, _operation(p.lstrip('/').split('/', 1)[1] if p.startswith('/v') else p.lstrip('/'), {})
        return None

    def _generic(self, r: Request) -> tuple[int, Any]:
        stub, p = self.stub, r.path
        if r.method == 'GET':
            if p in stub.resources:
                return 200, stub.resources[p]
            if is_collection(p):
                items = [v for k, v in stub.resources.items() if k.rsplit('/', 1)[0] == p]
                if stub.mode == 'exists':
                    listed = next((listed for (api, suffix), listed in stub.listings.items()
                                   if api == r.api and p.endswith(suffix)), [])
                    known = {item.get('name') for item in items}
                    items += [item for item in listed if item['name'] not in known]
                return 200, {_list_field(r): items} if items else {}
            if stub.mode == 'exists':
                return 200, _existing(stub.url, r)
            return _not_found(p)
        if r.method == 'DELETE':
            stub.resources.pop(p, None)
            return 200, _done(stub, r, p, {})
        body = r.body if isinstance(r.body, dict) else {}
        if r.method == 'POST' and is_collection(p):       # insert into a collection
            name = (_resource_id(r) or body.get('name', '').rsplit('/', 1)[-1] or body.get('accountId')
                    or f'item-{len(stub.resources)}')
            if r.api == 'bigquery':   # bq names what it inserts in a reference, not in the query
                name = (body.get('datasetReference') or body.get('tableReference') or {}).get(
                    'tableId' if p.endswith('/tables') else 'datasetId', name)
            if r.api == 'iam' and p.endswith('/serviceAccounts'):
                name = f'{body.get("accountId")}@{p.split("/")[3]}.iam.gserviceaccount.com'
            key = f'{p}/{name}'
            resource = {**_merge(_existing(stub.url, Request(r.api, 'GET', key, {}, None)), _resource_body(r, body)),
                        'name': _resource_name(r, key, body)}
            stub.resources[key] = resource
            return 200, _done(stub, r, key, resource)
        # PUT (create by name), PATCH (update), POST to a custom method
        key = p.rsplit(':', 1)[0] if ':' in p.rsplit('/', 1)[-1] else p
        current = stub.resources.get(key) or _existing(stub.url, Request(r.api, 'GET', key, {}, None))
        resource = _merge(current, _resource_body(r, body))
        stub.resources[key] = resource
        return 200, _done(stub, r, key, resource)


def _firestore_field_patch(stub: GoogleStub, r: Request) -> tuple[int, Any]:
    """Firestore Admin API `fields.patch` as `gcloud firestore fields ttls update` meets it.

    gcloud (surface/firestore/fields/ttls/update.yaml, command_lib/firestore/util.py UpdateFieldRequestTtls)
    sends PATCH .../collectionGroups/G/fields/F?updateMask=ttlConfig with body {name, ttlConfig: {}} to enable
    and {name} to disable. The API answers a long-running Operation (FieldOperationMetadata, response Field;
    polled at projects/P/databases/D/operations/X, the yaml's async collection), and the field's
    ttlConfig.state is CREATING until every existing document is processed, then ACTIVE (Field.TtlConfig.State
    in the Admin API reference). A database that does not exist is NOT_FOUND.
    """
    path = r.path
    database = path.split('/collectionGroups/', 1)[0]
    if stub.mode == 'create' and database not in stub.resources:
        return _not_found(database)
    body = r.body if isinstance(r.body, dict) else {}
    name = path.split('/', 2)[2]
    if body.get('name') not in (None, name):
        return 400, {'error': {'code': 400, 'status': 'INVALID_ARGUMENT',
                               'message': f'name {body.get("name")} is not {name}'}}
    field = dict(stub.resources.get(path) or {'name': name, 'indexConfig': {'usesAncestorConfig': True}})
    mask = set(filter(None, r.query.get('updateMask', '').split(',')))
    delta = None
    if 'ttlConfig' in mask:
        if body.get('ttlConfig') is not None:
            delta = None if 'ttlConfig' in field else 'ADD'
            field['ttlConfig'] = {'state': 'CREATING'}
        else:
            delta = 'REMOVE' if 'ttlConfig' in field else None
            field.pop('ttlConfig', None)
    stub.resources[path] = field
    operation = f'{database.split("/", 2)[2]}/operations/field-op-{len(stub.requests)}'
    metadata = {'@type': 'type.googleapis.com/google.firestore.admin.v1.FieldOperationMetadata', 'field': name,
                'state': 'PROCESSING', **({'ttlConfigDelta': {'changeType': delta}} if delta else {})}
    finished = {**field, 'ttlConfig': {'state': 'ACTIVE'}} if 'ttlConfig' in field else field
    stub.resources['operation:' + operation] = {
        'name': operation, 'done': True, 'metadata': {**metadata, 'state': 'SUCCESSFUL'},
        'response': {'@type': 'type.googleapis.com/google.firestore.admin.v1.Field', **finished}}
    return 200, {'name': operation, 'metadata': metadata}


# --- shapes of answers ------------------------------------------------------------------------

_COLLECTIONS = {'topics', 'subscriptions', 'secrets', 'versions', 'serviceAccounts', 'functions', 'connectors',
                'firewalls', 'addresses', 'routers', 'instances', 'jobs', 'metrics', 'alertPolicies', 'databases',
                'triggers', 'datasets', 'tables', 'locations'}


def is_collection(path: str) -> bool:
    """Whether `path` names a collection (a POST to it creates a resource)."""
    return path.rsplit('/', 1)[-1] in _COLLECTIONS


def _list_field(r: Request) -> str:
    if r.api == 'compute':
        return 'items'
    return r.path.rsplit('/', 1)[-1]


def _resource_id(r: Request) -> str | None:
    return next((value for key, value in r.query.items() if key.endswith('Id')), None)


def _resource_name(r: Request, key: str, body: dict[str, Any]) -> str:
    if r.api == 'compute':
        return body.get('name') or key.rsplit('/', 1)[-1]
    return key.split('/', 2)[2] if key.startswith('/v') else key.lstrip('/')


def _resource_body(r: Request, body: dict[str, Any]) -> dict[str, Any]:
    """What a create or update request asks the resource to be (the resource itself, not a wrapper)."""
    for wrapper in ('function', 'resource', 'serviceAccount', 'topic', 'subscription', 'secret'):
        if isinstance(body.get(wrapper), dict) and len(body) <= 3:
            return body[wrapper]
    return body


def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """`base` with `change` applied, nested objects merged (output-only fields of `base` survive)."""
    merged = dict(base)
    for key, value in change.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def _not_found(path: str) -> tuple[int, Any]:
    return 404, {'error': {'code': 404, 'status': 'NOT_FOUND', 'message': f'{path} was not found',
                           'errors': [{'reason': 'notFound', 'message': f'{path} was not found'}]}}


def _operation(name: str, response: dict[str, Any]) -> dict[str, Any]:
    return {'name': name, 'done': True, 'response': response, 'metadata': {}}


def _compute_operation(url: str, target: str, kind: str, number: int) -> dict[str, Any]:
    """A finished compute operation on `target` (a path such as /projects/P/regions/R/addresses/A)."""
    parts = target.strip('/').split('/')
    scope = '/'.join(parts[:4]) if parts[2] in ('regions', 'zones') else '/'.join(parts[:3])
    operation = {'kind': 'compute#operation', 'name': f'operation-{number}', 'status': 'DONE', 'progress': 100,
                 'targetLink': f'{url}/compute{target}',
                 'selfLink': f'{url}/compute/{scope}/operations/operation-{number}',
                 'operationType': kind}
    if parts[2] in ('regions', 'zones'):
        operation[parts[2][:-1]] = f'{url}/compute/{scope}'
    return operation


_LRO_APIS = {'cloudfunctions', 'firestore', 'vpcaccess', 'serviceusage', 'eventarc', 'run'}


def _done(stub: GoogleStub, r: Request, key: str, resource: dict[str, Any]) -> dict[str, Any]:
    """The answer to a change: the resource, or a finished operation for APIs that answer with one."""
    if r.api == 'compute':
        operation = _compute_operation(stub.url, key, {'POST': 'insert', 'DELETE': 'delete'}.get(r.method, 'patch'),
                                       number=len(stub.requests))
        stub.resources[operation['selfLink'].removeprefix(f'{stub.url}/compute')] = operation   # polled later
        return operation
    if r.api in _LRO_APIS:
        parts = key.strip('/').split('/')
        # operations live under projects/P/locations/L (projects/P/databases/D for Firestore) or projects/P
        prefix = '/'.join(parts[1:5]) if len(parts) > 4 and parts[3] in ('locations', 'databases') \
            else '/'.join(parts[1:3])
        return _operation(f'{prefix}/operations/op-1', resource)
    return resource


def _existing(url: str, r: Request) -> dict[str, Any]:
    """A resource as a deployed project would have it, built from its path."""
    p = r.path
    name = p.split('/', 2)[2] if p.startswith('/v') else p.lstrip('/')
    base: dict[str, Any] = {'name': name}
    if r.api == 'compute':
        base = {'name': p.rsplit('/', 1)[1], 'selfLink': f'{url}/compute{p}'}
        if '/addresses/' in p:
            base['address'] = GATEWAY_IP
        if '/instances/' in p:
            base['metadata'] = {'fingerprint': 'abc=', 'items': []}
            base['status'] = 'RUNNING'
        if '/firewalls/' in p:
            base['network'] = 'global/networks/default'
        if '/routers/' in p:
            base['nats'] = [{'name': p.rsplit('/', 1)[1].replace('-router', '-nat')}]
    if r.api == 'cloudfunctions' and '/functions/' in p:
        project, location, function = p.split('/')[3], p.split('/')[5], p.rsplit('/', 1)[1]
        base.update({'environment': 'GEN_2', 'state': 'ACTIVE',
                     'eventTrigger': {'trigger': f'projects/{project}/locations/{location}/triggers/{function}-t1',
                                      'pubsubTopic': f'projects/{project}/topics/{function}'},
                     'serviceConfig': {'service': f'projects/{project}/locations/{location}/services/{function}'},
                     'buildConfig': {'runtime': 'python312', 'entryPoint': 'run_intent'}})
    if r.api == 'eventarc' and '/triggers/' in p:
        project, location, trigger = p.split('/')[3], p.split('/')[5], p.rsplit('/', 1)[1]
        # named as Eventarc names them: eventarc-<location>-<trigger>-sub-<nnn>
        subscription = f'eventarc-{location}-{trigger}-sub-001'
        base['transport'] = {'pubsub': {'subscription': f'projects/{project}/subscriptions/{subscription}',
                                        'topic': f'projects/{project}/topics/intents'}}
    if r.api == 'iam' and '/serviceAccounts/' in p:
        email = p.rsplit('/', 1)[1]
        base.update({'email': email, 'uniqueId': '1234567890'})
    if r.api == 'firestore' and '/databases/' in p:
        base.update({'type': 'FIRESTORE_NATIVE', 'locationId': 'nam5',
                     'deleteProtectionState': 'DELETE_PROTECTION_ENABLED'})
    if r.api == 'pubsub' and '/subscriptions/' in p:
        base.update({'topic': name.rsplit('/', 2)[0] + '/topics/x', 'ackDeadlineSeconds': 10})
    return base
