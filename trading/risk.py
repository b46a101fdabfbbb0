"""Pre-trade risk limits, checked on the whole plan before any order is sent; independent of strategies.

The limit names are those of the config (limits.*), so a rejection says which setting to look at.
"""
from __future__ import annotations

from dataclasses import dataclass

from trading.trading_config import RiskLimits


class RiskLimitBreached(Exception):
    """The plan breaks one or more limits; nothing is sent. `limits` names them."""

    def __init__(self, breaches: list[tuple[str, str]]):
        self.limits = sorted({name for name, _ in breaches})
        super().__init__('risk limits breached, no order sent: '
                         + '; '.join(f'{name}: {detail}' for name, detail in breaches))


@dataclass(frozen=True)
class CheckedOrder:
    """What the limits need to know about one order."""

    name: str                  # for messages: SPY, MNQZ6, EUR.USD
    symbols: tuple[str, ...]   # what the allowlist may name: the symbol, and for forex also the pair
    price: float | None        # where it would fill: the market side (or a better limit); None without a live price
    last_close: float | None
    notional: float            # |quantity| x price x multiplier, in the base currency (inf without a price)


def check_limits(orders: list[CheckedOrder], limits: RiskLimits, net_liquidation: float, base_currency: str) -> None:
    """Raise RiskLimitBreached listing every limit the orders break together; return if none."""
    def money(amount: float) -> str:
        return f'{amount:,.2f} {base_currency}'

    def share_of_nlv(amount: float, limit: float) -> str:
        share = f'{amount / net_liquidation:.2%}' if net_liquidation > 0 else 'all'
        return f'{money(amount)} is {share} of net liquidation {money(net_liquidation)} > {limit:.2%}'

    breaches: list[tuple[str, str]] = []
    if len(orders) > limits.max_orders_per_run:
        breaches.append(('maxOrdersPerRun', f'{len(orders)} orders > {limits.max_orders_per_run}'))
    for order in orders:
        if not any(limits.allows(symbol) for symbol in order.symbols):
            breaches.append(('allowlist', f'{order.name} is not in limits.allowlist'))
        breaches += _price_band(order, limits.price_band)
        if order.price is None:
            continue    # no live price: refused by the band above; its notional is unknown
        if order.notional > limits.max_order_notional:
            breaches.append(('maxOrderNotional',
                             f'{order.name} {money(order.notional)} > {money(limits.max_order_notional)}'))
        if not _within_share(order.notional, net_liquidation, limits.max_order_nlv_share):
            breaches.append(('maxOrderNlvShare',
                             f'{order.name} {share_of_nlv(order.notional, limits.max_order_nlv_share)}'))
    total = sum(order.notional for order in orders if order.price is not None)
    if orders and not _within_share(total, net_liquidation, limits.max_run_nlv_share):
        breaches.append(('maxRunNlvShare', f'all orders {share_of_nlv(total, limits.max_run_nlv_share)}'))
    if breaches:
        raise RiskLimitBreached(breaches)


def _price_band(order: CheckedOrder, band: float) -> list[tuple[str, str]]:
    breach = price_band_breach(order, band)
    return [('priceBand', breach)] if breach else []


def price_band_breach(order: CheckedOrder, band: float) -> str | None:
    """Why the order's price is outside `band` of the last close, or None; no live price fails closed."""
    if order.price is None:
        return f'{order.name} has no live bid, ask or last price to check against; not sent'
    if order.last_close is None:
        return f'{order.name} has no last close to check its price against; not sent'
    deviation = abs(order.price - order.last_close) / order.last_close
    if deviation > band:
        return (f'{order.name} price {order.price:g} is {deviation:.2%} from the last close '
                f'{order.last_close:g} > {band:.2%}')
    return None


def _within_share(amount: float, net_liquidation: float, share: float) -> bool:
    return net_liquidation > 0 and amount <= share * net_liquidation
