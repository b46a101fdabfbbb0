"""Runs a plan with the real command-line tools, or prints it (`dry_run`) without running anything.

Secret values reach a command only on its standard input. As a last guard, the runner refuses any
command line with an argument that is, or holds as a `=`/`,`-separated part, a secret value, and
never prints standard input.

On a project's first deploy, Google's service agents and new service accounts become usable some
time after the APIs are enabled or the accounts created. A command failing with one of those known
messages (PROPAGATION) is run again after a pause, a bounded number of times, saying what it waits for.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence, TextIO

from deploy.steps import (Always, Arg, Command, Ensure, Prune, Query, Ref, Remove, SetSecret, StageFiles, Step,
                          WriteFile)

_NOT_FOUND = re.compile(r'NOT_FOUND|not found|was not found|does not exist|404', re.IGNORECASE)
# Errors a fresh project gives until Google has finished setting something up, and what that is.
PROPAGATION: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r'Permission denied while using the Eventarc Service Agent', re.IGNORECASE),
     'the Eventarc service agent to receive its permissions (minutes after the API is enabled)'),
    (re.compile(r'Service account \S+@gcp-sa-[a-z-]+\.iam\.gserviceaccount\.com does not exist', re.IGNORECASE),
     "a Google service agent to be created (minutes after its API is enabled)"),
    (re.compile(r'Service account \S+\.iam\.gserviceaccount\.com does not exist', re.IGNORECASE),
     'a new service account to become known to IAM'),
    (re.compile(r'wait a few minutes for the action to propagate', re.IGNORECASE),
     'a newly enabled API to become usable'),
)
# Pauses between attempts of a command that failed with a PROPAGATION error: about 8 minutes in all.
RETRY_DELAYS = (15.0, 30.0, 60.0, 90.0, 120.0, 180.0)
_STAGE_IGNORED = shutil.ignore_patterns('__pycache__', '*.pyc', '.*')
# Secret values at least this long are hidden in error output wherever they occur.
_SCRUB_ANYWHERE = 6


class DeployError(RuntimeError):
    """A command failed, or a plan would leak a secret; the message says which and why."""


class Runner:
    """Executes steps in order, printing each command it runs."""

    def __init__(self, *, secrets: Mapping[str, str], dry_run: bool, out: TextIO, cwd: Path,
                 retry_delays: Sequence[float] = RETRY_DELAYS, sleep: Callable[[float], None] = time.sleep) -> None:
        self.secrets = dict(secrets)
        self.dry_run = dry_run
        self.out = out
        self.cwd = cwd
        self.retry_delays = tuple(retry_delays)
        self.sleep = sleep
        self.values: dict[str, str] = {}

    def run(self, steps: list[Step]) -> None:
        """Run (or print) every step; raise DeployError at the first failure."""
        for step in steps:
            if isinstance(step, Always):
                self._always(step)
            elif isinstance(step, Ensure):
                self._ensure(step)
            elif isinstance(step, Remove):
                self._remove(step)
            elif isinstance(step, Prune):
                self._prune(step)
            elif isinstance(step, Query):
                self._query(step)
            elif isinstance(step, SetSecret):
                self._set_secret(step)
            elif isinstance(step, WriteFile):
                self._write_file(step)
            elif isinstance(step, StageFiles):
                self._stage_files(step)
            else:
                raise TypeError(f'not a step: {step!r}')

    def _always(self, step: Always) -> None:
        self._say(f'# {step.what}')
        for command in step.commands:
            self._execute(command)

    def _ensure(self, step: Ensure) -> None:
        if self.dry_run:
            self._say(f'# {step.what}: create unless `{self._show(step.probe)}` finds it')
            for command in step.create:
                self._say(self._show(command))
            if step.update:
                self._say('# ... or, when it exists, update it:')
                for command in step.update:
                    self._say(self._show(command))
            return
        if self._exists(step.probe, step.found_as):
            self._say(f'# {step.what}: exists' + (', updating' if step.update else ', nothing to change'))
            commands = step.update
        else:
            self._say(f'# {step.what}: creating')
            commands = step.create
        for command in commands:
            self._execute(command)

    def _remove(self, step: Remove) -> None:
        if self.dry_run:
            self._say(f'# {step.what}: delete if `{self._show(step.probe)}` finds it')
            for command in step.delete:
                self._say(self._show(command))
            return
        if not self._exists(step.probe, step.found_as):
            self._say(f'# {step.what}: not there')
            return
        self._say(f'# {step.what}: deleting')
        for command in step.delete:
            self._execute(command)

    def _prune(self, step: Prune) -> None:
        kept = ', '.join(sorted(step.keep)) or 'none'
        if self.dry_run:
            self._say(f'# {step.what}: for each {step.name} that `{self._show(step.listing)}` prints, '
                      f'except {kept}:')
            self._say(self._show(step.delete))
            return
        result = self._call(step.listing)
        if result.returncode != 0:
            raise DeployError(f'{self._show(step.listing)} failed (exit {result.returncode}): '
                              f'{self._scrub(result.stderr.strip()[-2000:])}')
        extra = [name for name in result.stdout.split() if name not in step.keep]
        self._say(f'# {step.what}: ' + (f'deleting {", ".join(extra)}' if extra else 'nothing to delete'))
        for name in extra:
            self.values[step.name] = name
            self._execute(step.delete)
        self.values.pop(step.name, None)

    def _query(self, step: Query) -> None:
        if self.dry_run:
            self._say(f'{step.name}=$({self._show(step.command)})')
            return
        result = self._call(step.command)
        value = result.stdout.strip()
        if result.returncode != 0 or not value:
            raise DeployError(f'{self._show(step.command)} gave no {step.name} '
                              f'(exit {result.returncode}): {self._scrub(result.stderr.strip()[-2000:])}')
        self.values[step.name] = value
        self._say(f'{step.name}={value}')

    def _set_secret(self, step: SetSecret) -> None:
        value = self.secrets.get(step.value_name)
        if value is None:
            self._say(f'# {step.what}: {step.value_name} not given, the secret keeps its versions; add one with\n'
                      f'#   {self._show(step.add)} < file-holding-the-value')
            return
        if self.dry_run:
            self._say(f'# {step.what}: add a version unless `{self._show(step.access)}` prints it already')
            self._say(f'{self._show(step.add)} <<< "${step.value_name}"')
            return
        latest = self._call(step.access)
        if latest.returncode == 0 and latest.stdout == value:
            self._say(f'# {step.what}: latest version is current')
            return
        if latest.returncode != 0 and not _NOT_FOUND.search(latest.stderr):
            raise DeployError(f'{self._show(step.access)} failed (exit {latest.returncode}): '
                              f'{self._scrub(latest.stderr.strip()[-2000:])}')
        self._say(f'# {step.what}: adding a version')
        self._execute(step.add)

    def _write_file(self, step: WriteFile) -> None:
        self._say(f'# {step.what}: write {step.path}')
        if not self.dry_run:
            step.path.parent.mkdir(parents=True, exist_ok=True)
            step.path.write_text(step.content)

    def _stage_files(self, step: StageFiles) -> None:
        self._say(f'# {step.what}: copy {", ".join(step.names)} from {step.root} into a fresh {step.dest}')
        if self.dry_run:
            return
        if step.dest.exists():
            shutil.rmtree(step.dest)
        step.dest.mkdir(parents=True)
        for name in step.names:
            source = step.root / name
            if source.is_dir():
                shutil.copytree(source, step.dest / name, ignore=_STAGE_IGNORED)
            else:
                shutil.copy2(source, step.dest / name)

    def _exists(self, probe: Command, found_as: str | None) -> bool:
        result = self._call(probe)
        if result.returncode == 0 and found_as:
            found = result.stdout.split()
            if found:
                self.values[found_as] = found[0]
            return bool(found)
        if result.returncode == 0:
            return True
        if _NOT_FOUND.search(result.stderr) or _NOT_FOUND.search(result.stdout):   # bq reports errors on stdout
            return False
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise DeployError(f'cannot tell whether it exists: {self._show(probe)} failed '
                          f'(exit {result.returncode}): {self._scrub(detail)}')

    def _execute(self, command: Command) -> None:
        self._say(('' if self.dry_run else '+ ') + self._show(command)
                  + (f' <<< "${command.stdin_secret}"' if command.stdin_secret else ''))
        if self.dry_run:
            return
        result = self._call(command)
        for attempt, delay in enumerate(self.retry_delays, start=2):
            waiting_for = _propagation(result)
            if waiting_for is None:
                break
            self._say(f'  (not ready yet: waiting {delay:g} s for {waiting_for}, then attempt {attempt} '
                      f'of {len(self.retry_delays) + 1})')
            self.sleep(delay)
            result = self._call(command)
        if result.returncode != 0:
            if _propagation(result):
                raise DeployError(f'{self._show(command)} still failed after {len(self.retry_delays) + 1} attempts '
                                  f'waiting for {_propagation(result)}; run apply again later:\n'
                                  f'{self._scrub(result.stderr.strip()[-3000:])}')
            if command.tolerate_failure:
                self._say(f'  (ignored: exit {result.returncode})')
                return
            raise DeployError(f'{self._show(command)} failed (exit {result.returncode}):\n'
                              f'{self._scrub(result.stderr.strip()[-3000:])}')

    def _call(self, command: Command) -> subprocess.CompletedProcess[str]:
        argv = [self._program(command.program), *(self._resolve(arg) for arg in command.args)]
        self._refuse_secrets(argv)
        stdin = self.secrets[command.stdin_secret] if command.stdin_secret else None
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=self.cwd,
                              stdin=None if stdin is not None else subprocess.DEVNULL)

    def _program(self, name: str) -> str:
        path = shutil.which(name)
        if path is None:
            raise DeployError(f'{name} is not on PATH: install the Google Cloud CLI')
        return path

    def _resolve(self, arg: Arg) -> str:
        if isinstance(arg, Ref):
            return arg.prefix + self.values[arg.name] + arg.suffix
        return arg

    def _show(self, command: Command) -> str:
        words = [command.program]
        shown_args = []
        for arg in command.args:
            if isinstance(arg, Ref) and arg.name not in self.values:
                words.append(_quote(arg.prefix) + f'"${{{arg.name}}}"' + _quote(arg.suffix))
                shown_args += [arg.prefix, arg.suffix]
            else:
                shown_args.append(self._resolve(arg))
                words.append(shlex.quote(shown_args[-1]))
        self._refuse_secrets(shown_args)
        return ' '.join(words)

    def _refuse_secrets(self, argv: list[str]) -> None:
        for name, value in self.secrets.items():
            if value and any(value in _parts(arg) for arg in argv):
                raise DeployError(f'refusing to put the value of {name} on a command line')

    def _scrub(self, text: str) -> str:
        for name, value in self.secrets.items():
            if len(value) >= _SCRUB_ANYWHERE:
                text = text.replace(value, f'<{name}>')
            elif value:   # a short value is hidden where it stands alone, not inside every word holding it
                text = re.sub(rf'(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])', f'<{name}>', text)
        return text

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def _parts(arg: str) -> set[str]:
    """The argument, what follows each `=` in it, and its pieces between `=` and `,`: where a value
    can sit in `--flag=VALUE`, `--flag=KEY=VALUE` or `--flag=K=V,K=V`.
    """
    parts = {arg, *re.split(r'[=,]', arg)}
    parts.update(arg[index + 1:] for index, char in enumerate(arg) if char == '=')
    return parts


def _propagation(result: subprocess.CompletedProcess[str]) -> str | None:
    """What a failed command waits for, when its error is a known first-deploy propagation delay."""
    if result.returncode == 0:
        return None
    return next((what for pattern, what in PROPAGATION if pattern.search(result.stderr)), None)


def _quote(text: str) -> str:
    return shlex.quote(text) if text else ''
