"""The vocabulary of a plan: commands, and the steps that decide which commands run.

A plan is a list of steps. `Ensure` makes something exist (create it when its probe says it is
missing, else update it), `Remove` deletes it when its probe finds it, `Prune` deletes what a
listing shows beyond what should be kept, `Always` runs idempotent
commands as they are, `Query` captures a value later commands refer to with `Ref`, `SetSecret`
adds a secret version when the value differs from the latest one, `WriteFile` writes a local file
a later command reads, and `StageFiles` copies chosen files into a fresh local directory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union


@dataclass(frozen=True)
class Ref:
    """A value printed by an earlier `Query`, known only while the plan runs: prefix + value + suffix."""

    name: str
    prefix: str = ''
    suffix: str = ''


Arg = Union[str, Ref]


@dataclass(frozen=True)
class Command:
    """One command line: `program` followed by `args`."""

    args: tuple[Arg, ...]
    program: str = 'gcloud'
    stdin_secret: str | None = None     # name of the secret value fed on standard input
    tolerate_failure: bool = False      # e.g. removing an IAM binding that is already gone


@dataclass(frozen=True)
class Always:
    """Commands that are safe to run again as they are."""

    what: str
    commands: tuple[Command, ...]


@dataclass(frozen=True)
class Ensure:
    """Create when the probe reports "not found", else run the update commands (possibly none)."""

    what: str
    probe: Command
    create: tuple[Command, ...]
    update: tuple[Command, ...] = ()
    found_as: str | None = None   # set: the probe is a listing; its first line is Ref(found_as), none = missing


@dataclass(frozen=True)
class Remove:
    """Run the delete commands when the probe finds the resource."""

    what: str
    probe: Command
    delete: tuple[Command, ...]
    found_as: str | None = None   # as in Ensure


@dataclass(frozen=True)
class Prune:
    """Run `delete` (which names the item as Ref(name)) for every line `listing` prints that is not in `keep`."""

    what: str
    listing: Command
    keep: frozenset[str]
    name: str
    delete: Command


@dataclass(frozen=True)
class Query:
    """Run a command and keep its trimmed output as the value of Ref(name)."""

    name: str
    command: Command


@dataclass(frozen=True)
class SetSecret:
    """Add a version to `secret` holding the value named `value_name`, unless the latest already holds it."""

    what: str
    secret: str
    value_name: str
    access: Command      # prints the latest version
    add: Command         # reads the value on standard input


@dataclass(frozen=True)
class WriteFile:
    """Write a local file (rendered configuration) that a later command reads."""

    what: str
    path: Path
    content: str


@dataclass(frozen=True)
class StageFiles:
    """Replace directory `dest` with copies of `names` (files or directories) from `root`.

    Caches and dot files are left out, so `dest` holds exactly what a later command should see.
    """

    what: str
    root: Path
    names: tuple[str, ...]
    dest: Path


Step = Union[Always, Ensure, Remove, Prune, Query, SetSecret, WriteFile, StageFiles]


def gcloud(project: str, *args: Arg, stdin_secret: str | None = None, tolerate_failure: bool = False) -> Command:
    """A gcloud command against `project` that never prompts."""
    return Command((*args, f'--project={project}', '--quiet'), stdin_secret=stdin_secret,
                   tolerate_failure=tolerate_failure)


def secret_with_value(project: str, secret: str, value_name: str) -> list[Step]:
    """Create `secret` when missing, then add a version holding the value named `value_name` (read from the
    deploy's environment and given to gcloud on standard input, never in argv) when it was given and changed."""
    return [Ensure(f'secret {secret}',
                   probe=gcloud(project, 'secrets', 'describe', secret),
                   create=(gcloud(project, 'secrets', 'create', secret, '--replication-policy=automatic'),)),
            SetSecret(f'secret {secret} value', secret, value_name,
                      access=gcloud(project, 'secrets', 'versions', 'access', 'latest', f'--secret={secret}'),
                      add=gcloud(project, 'secrets', 'versions', 'add', secret, '--data-file=-',
                                 stdin_secret=value_name))]
