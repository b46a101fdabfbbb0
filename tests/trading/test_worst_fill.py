"""Limits on the price that really fills: notional at the market side, offsets bounded, no live price fails closed.

Counted at the simulated gateway: the notional of each order is taken from its executions there.
The simulator's clock is frozen in these tests, so the quote the run checks is the quote that fills.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from hypothesis import example, given, settings, strategies as st

from tests.reliability.harness import HEAVY      # RELIABILITY_HEAVY=1: more, random examples
from tests.trading.support import ACCOUNT

FLAT_DAY = datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)     # the dummy strategy is flat: it closes what is held
CAP = 370_000.0
ROOMY_NLV_LIMITS = {'maxOrderNotional': CAP, 'maxOrderNlvShare': 5.0, 'maxRunNlvShare': 5.0,
                    'maxLimitOffsetBps': 1000.0}


def filled_notional_by_order(rig) -> dict[int, float]:
    """permId -> sum of shares x price of its executions at the simulator."""
    notional: dict[int, float] = defaultdict(float)
    for execution in rig.sim.broker.executions():
        notional[execution.permId] += execution.shares * execution.price * execution.instrument.price_multiplier
    return dict(notional)


@settings(max_examples=40 if HEAVY else 12)          # derandomized under CI by the profile (tests/conftest.py)
@given(order_type=st.sampled_from(['market', 'marketable-limit', 'adaptive']),
       offset_bps=st.sampled_from([0.0, 10.0, 200.0, 950.0, 1000.0]),
       held=st.integers(300, 800) | st.integers(-800, -300))
@example(order_type='marketable-limit', offset_bps=950.0, held=634)      # the SELL of 634 SPY
@example(order_type='marketable-limit', offset_bps=950.0, held=-560)
@example(order_type='market', offset_bps=0.0, held=587)
def test_no_filled_order_is_above_max_order_notional(make_rig, order_type, offset_bps, held):
    rig = getattr(test_no_filled_order_is_above_max_order_notional, 'rig', None)
    if rig is None or rig.sim._loop is None or rig.sim._loop.is_closed():
        rig = make_rig(time=FLAT_DAY)
        rig.sim.clock.freeze()
        rig.store.put_settings({'limits': ROOMY_NLV_LIMITS})
        test_no_filled_order_is_above_max_order_notional.rig = rig
    spy = rig.instrument('SPY')
    rig.sim.broker.set_cash(ACCOUNT, 'USD', 1_000_000.0)     # each example starts from the same account
    rig.sim.broker.set_position(ACCOUNT, spy, held, 600.0)
    quote = rig.sim.quote(spy)
    market_side = quote.bid if held > 0 else quote.ask         # a sell fills at the bid, a buy at the ask
    before = filled_notional_by_order(rig)

    result = rig.send('allocation', {'orderPolicy': {'orderType': order_type, 'limitOffsetBps': offset_bps}},
                      key=f'{order_type}-{offset_bps}-{held}-{len(before)}')

    new_fills = {perm: n for perm, n in filled_notional_by_order(rig).items() if perm not in before}
    assert all(notional <= CAP for notional in new_fills.values()), (new_fills, result.error)
    if abs(held) * market_side <= CAP:
        assert result.status == 'ok', result.error
        assert rig.position('SPY') == 0 and len(new_fills) == 1
    else:
        assert result.status == 'rejected' and result.error.type == 'RiskLimitBreached'
        assert 'maxOrderNotional: SPY' in result.error.message and new_fills == {}
        assert rig.position('SPY') == held


def test_the_notional_of_a_limit_sell_is_taken_at_the_bid_not_at_its_limit(make_rig):
    rig = make_rig(time=FLAT_DAY)
    rig.sim.clock.freeze()
    rig.store.put_settings({'limits': ROOMY_NLV_LIMITS})
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), 634, 600.0)
    bid = rig.sim.quote(rig.instrument('SPY')).bid
    result = rig.send('allocation', {'orderPolicy': {'orderType': 'marketable-limit', 'limitOffsetBps': 950}})
    assert result.status == 'rejected', 'checked at the limit 9.5 % below the bid, it would pass and fill above'
    assert f'SPY {634 * bid:,.2f} USD > {CAP:,.2f} USD' in result.error.message
    assert rig.order_log() == [] and rig.position('SPY') == 634


def test_limit_offset_beyond_the_configured_bound_is_refused(rig):
    beyond = rig.send('allocation', {'orderPolicy': {'orderType': 'marketable-limit', 'limitOffsetBps': 150}})
    assert beyond.status == 'rejected' and beyond.error.type == 'IntentRejected'
    assert 'limitOffsetBps=150 is more than limits.maxLimitOffsetBps=100' in beyond.error.message
    absurd = rig.send('allocation', {'orderPolicy': {'orderType': 'marketable-limit', 'limitOffsetBps': 5000}})
    assert absurd.status == 'rejected' and absurd.error.type == 'InvalidParams'
    assert rig.order_log() == []


def test_without_a_live_bid_ask_or_last_the_band_fails_closed_naming_the_contract(rig):
    rig.sim.faults.no_live_quote = {'SPY'}          # the quote has a close, nothing live
    result = rig.send('allocation')
    assert result.status == 'rejected' and result.error.type == 'RiskLimitBreached'
    assert 'priceBand: SPY has no live bid, ask or last price' in result.error.message
    assert rig.order_log() == []
    rig.sim.faults.no_live_quote = set()
    assert rig.send('allocation', key='with-a-live-quote').status == 'ok'
