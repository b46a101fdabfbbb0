"""Trading rules: order execution, risk limits, sizing, market hours and sessions, idempotency, the fills ledger.
Built on lib/ (settings, the gateway session, the store, logging); lib/ never imports from here.
"""
