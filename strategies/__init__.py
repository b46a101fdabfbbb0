"""Strategy plugins: pure maps from market data and config to target weights. Look them up in strategies.registry."""
