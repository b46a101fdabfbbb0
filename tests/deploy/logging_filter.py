"""Cloud Logging's side of an alert: a function's stdout line as the LogEntry Logging stores, and a filter
(Logging query language) evaluated against it, so a test can show which real log lines a policy matches.

Modelled on Google's documentation, not on our own filters:
- the LogEntry: "Structured logging" (https://cloud.google.com/logging/docs/structured-logging), special
  JSON fields: `severity` -> severity, `time`/`timestamp` -> timestamp, `logging.googleapis.com/labels` ->
  labels, `logging.googleapis.com/sourceLocation|trace|spanId|insertId|operation`, `httpRequest` -> their
  LogEntry fields; every other key stays in jsonPayload (`message` included). A 2nd gen function runs as the
  Cloud Run service of the same name: resource `cloud_run_revision`, label `service_name`.
- the filter: "Logging query language" (https://cloud.google.com/logging/docs/view/logging-query-language):
  `expression = ["NOT"] comparison { ("AND" | "OR") ["NOT"] comparison }`, parentheses, NOT binding tightest
  and OR tighter than AND (the page's example: `a OR NOT b AND NOT c OR d` is `(a OR (NOT b)) AND ((NOT c) OR d)`);
  a comparison on a field the entry lacks is false; `FIELD:*` tests presence; string comparisons ignore case;
  `true`/`false` compare with JSON booleans.

Only that subset is understood: anything else (`!=`, `>`, `=~`, numbers, global restrictions) raises
UnsupportedFilter, so a policy cannot pass here by using syntax this model would get wrong.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_SPECIAL_FIELDS = {
    'severity': 'severity', 'time': 'timestamp', 'timestamp': 'timestamp',
    'logging.googleapis.com/labels': 'labels', 'logging.googleapis.com/sourceLocation': 'sourceLocation',
    'logging.googleapis.com/trace': 'trace', 'logging.googleapis.com/spanId': 'spanId',
    'logging.googleapis.com/insertId': 'insertId', 'logging.googleapis.com/operation': 'operation',
    'httpRequest': 'httpRequest',
}
_MISSING = object()


class UnsupportedFilter(ValueError):
    """The filter uses syntax this model does not evaluate."""


def cloud_run_entry(line: str, service_name: str, region: str = 'us-central1') -> dict[str, Any]:
    """The LogEntry Cloud Logging makes of one JSON line a 2nd gen function writes to stdout."""
    payload = json.loads(line)
    entry: dict[str, Any] = {'resource': {'type': 'cloud_run_revision',
                                          'labels': {'service_name': service_name, 'location': region}},
                             'severity': 'DEFAULT', 'labels': {}}
    for key, target in _SPECIAL_FIELDS.items():
        if key in payload:
            entry[target] = payload.pop(key)
    entry['jsonPayload'] = payload
    return entry


def matches(log_filter: str, entry: dict[str, Any]) -> bool:
    """Whether Cloud Logging would select `entry` with `log_filter`."""
    return _Parser(_tokens(log_filter)).parse()(entry)


# --- the filter -------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<op>!=|>=|<=|=~|!~|[=:<>])|(?P<paren>[()])'
                    r'|(?P<word>[^\s()=:<>!"]+))')


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokens(text: str) -> list[_Token]:
    found, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position:].strip():
                raise UnsupportedFilter(f'cannot read {text[position:]!r}')
            break
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        found.append(_Token(kind, match.group(kind)))
    return found


class _Parser:
    """AND of OR-groups of (NOT) terms, as the Logging query language binds them."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens, self.at = tokens, 0

    def parse(self):
        test = self._and()
        if self.at != len(self.tokens):
            raise UnsupportedFilter(f'unexpected {self.tokens[self.at].text!r}')
        return test

    def _peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self) -> _Token:
        token = self._peek()
        if token is None:
            raise UnsupportedFilter('the filter ends too early')
        self.at += 1
        return token

    def _and(self):
        parts = [self._or()]
        while (token := self._peek()) is not None and token.text != ')':
            if token.kind == 'word' and token.text == 'AND':
                self.at += 1
            parts.append(self._or())     # juxtaposition is an implicit AND
        return lambda entry: all(part(entry) for part in parts)

    def _or(self):
        parts = [self._not()]
        while (token := self._peek()) is not None and token.kind == 'word' and token.text == 'OR':
            self.at += 1
            parts.append(self._not())
        return lambda entry: any(part(entry) for part in parts)

    def _not(self):
        token = self._peek()
        if token is not None and token.kind == 'word' and token.text in ('NOT', '-'):
            self.at += 1
            inner = self._not()
            return lambda entry: not inner(entry)
        return self._term()

    def _term(self):
        token = self._take()
        if token.text == '(':
            inner = self._and()
            if self._take().text != ')':
                raise UnsupportedFilter('unbalanced parentheses')
            return inner
        if token.kind != 'word':
            raise UnsupportedFilter(f'a global restriction or stray {token.text!r} is not modelled')
        path = token.text.split('.')
        op = self._take()
        value = self._take()
        if op.text == ':' and value.text == '*':
            return lambda entry: _field(entry, path) is not _MISSING
        if op.text != '=':
            raise UnsupportedFilter(f'operator {op.text!r} is not modelled')
        if value.kind == 'string':
            wanted = json.loads(value.text)
            return lambda entry: isinstance(found := _field(entry, path), str) and found.lower() == wanted.lower()
        if value.kind == 'word' and value.text in ('true', 'false'):
            flag = value.text == 'true'
            return lambda entry: _field(entry, path) is flag
        raise UnsupportedFilter(f'value {value.text!r} is not modelled (quote strings; true or false)')


def _field(entry: dict[str, Any], path: list[str]) -> Any:
    value: Any = entry
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value
