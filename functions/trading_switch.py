"""`python -m functions trading status|on|off`: read and flip trading enabled in the function's store.

It uses the function's own settings (STORE_BACKEND, SQLITE_PATH, GOOGLE_CLOUD_PROJECT, FIRESTORE_DATABASE,
TRADING_MODE, TRADING_CONFIG_PATH, TRADING_ENABLED), so it reads and writes what the deployed function reads
before each order. `on` and `off` write `tradingEnabled` to the store; any source that still disables
trading is named (only the store can enable it: see trading.trading_config). `on` in live mode needs --yes.
"""
from __future__ import annotations

import json
from typing import Mapping, TextIO

from lib.config import ConfigError, Settings
from lib.store import StoreUnavailable, open_store
from trading.trading_config import TradingSwitch, trading_switch

ACTIONS = ('status', 'on', 'off')
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_trading_command(action: str, *, as_json: bool, yes: bool, out: TextIO, err: TextIO,
                        env: Mapping[str, str] | None = None) -> int:
    """Show or set trading enabled; exit 0 when the effective value is what was asked (status: always 0)."""
    try:
        settings = Settings.from_env(env)
        store = open_store(settings.store)
        if action == 'on' and settings.trading_mode == 'live' and not yes:
            err.write('error: TRADING_MODE=live: trading on lets the function place real orders; '
                      'run again with --yes to confirm\n')
            return EXIT_USAGE
        if action in ('on', 'off'):
            store.put_settings({'tradingEnabled': action == 'on'})
        switch = trading_switch(store, trading_mode=settings.trading_mode, env=settings.trading_config.environment,
                                path=settings.trading_config.path)
    except ConfigError as exc:
        err.write(f'error: {exc}\n')
        return EXIT_USAGE
    except StoreUnavailable as exc:
        err.write(f'error: the store could not be read or written: {exc}\n')
        return EXIT_FAILED
    if as_json:
        out.write(json.dumps({'action': action, **switch.describe()}) + '\n')
    else:
        out.write(render(switch, action))
    if action == 'status' or switch.enabled == (action == 'on'):
        return EXIT_OK
    return EXIT_FAILED


def render(switch: TradingSwitch, action: str) -> str:
    """The switch for people: the effective value, each source, and what still disables trading."""
    def shown(value: bool | None) -> str:
        return 'not set' if value is None else 'true' if value else 'false'

    lines = []
    if action in ('on', 'off'):
        lines.append(f'wrote tradingEnabled={"true" if action == "on" else "false"} to the store')
    lines.append(f'trading {"enabled" if switch.enabled else "disabled"} ({switch.mode} mode)')
    store = f'unreadable: {switch.store_error}' if switch.store_error else shown(switch.store)
    rows = [('environment TRADING_ENABLED', shown(switch.env)),
            ('config file tradingEnabled', f'{shown(switch.file)}   ({switch.file_path})'),
            ('store tradingEnabled', store),
            (f'{switch.mode} mode default', 'enabled' if switch.default else 'disabled')]
    lines += [f'  {name:<30} {value}' for name, value in rows]
    if not switch.enabled:
        lines.append(f'{"still disabled" if action == "on" else "disabled"} by: ' + '; '.join(switch.disabling()))
    return '\n'.join(lines) + '\n'
