"""Fill a simulated gateway with an account's activity: today's executions, completed orders, positions.

Another client id places 1-share market orders through the simulated broker, round-robin over the
universe's US stocks, so each order is one execution and one completed order, and the account ends
up holding positions across the universe. The orders go straight to `Simulator.broker` (what the
simulator does for a placeOrder from the wire): about 4 ms an order on this machine, so 3,000 take some 15 s.
"""
from __future__ import annotations

from simulator import Simulator
from simulator.model import Order

ACTIVITY_CLIENT_ID = 7   # a client id outside the runtime's range: somebody else's trading on the account


def fill_activity(sim: Simulator, executions: int, account: str | None = None,
                  client_id: int = ACTIVITY_CLIENT_ID) -> int:
    """Add `executions` fills (and as many completed orders) to `account`; returns the fills now held.

    Buys and sells alternate per contract, so positions stay small and cash never runs out. The
    simulator's clock must be inside the stocks' trading hours, or the orders rest instead of filling.
    """
    account = account or sim.accounts[0]
    stocks = [i for i in sim.universe.all() if i.secType == 'STK' and i.currency == 'USD']
    broker = sim.broker
    before = len(broker.executions(account=account))
    for n in range(executions):
        order = Order(orderId=broker.next_order_id(client_id), clientId=client_id, permId=0, account=account,
                      instrument=stocks[n % len(stocks)], action='BUY' if (n // len(stocks)) % 3 < 2 else 'SELL',
                      totalQuantity=1.0, orderType='MKT')
        broker.place(order)
    held = len(broker.executions(account=account))
    if held != before + executions:
        raise RuntimeError(f'{held - before} of {executions} activity orders filled: is the market open at '
                           f'{sim.clock.now().isoformat()}?')
    return held
