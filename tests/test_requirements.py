"""requirements-ib-async.txt pins what requirements-dev.txt pins, with ib_async in place of ib_insync."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# ib_async 2.1.0 requires aeventkit<3 and tzdata<2026, so those pins may differ from the ib_insync set.
OWN_PINS = {'ib-insync', 'ib-async', 'aeventkit', 'tzdata'}


def pins(name: str) -> dict[str, str]:
    """Package -> pinned version of a requirements file, following `-r` includes."""
    found: dict[str, str] = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line.startswith('-r '):
            found.update(pins(line[3:].strip()))
        elif line:
            package, _, version = line.partition('==')
            found[package.strip().lower().replace('_', '-')] = version.strip()
    return found


def test_ib_async_requirements_pin_the_same_packages_as_the_ib_insync_ones():
    insync, fork = pins('requirements-dev.txt'), pins('requirements-ib-async.txt')
    assert 'ib-async' not in insync and 'ib-insync' not in fork
    assert fork['ib-async'] == '2.1.0' and fork['aeventkit'] and fork['tzdata']
    assert all(fork.values()), 'every requirement is pinned with =='
    shared = {package: version for package, version in insync.items() if package not in OWN_PINS}
    assert {package: version for package, version in fork.items() if package not in OWN_PINS} == shared
