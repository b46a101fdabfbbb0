"""Shared runtime pieces: settings, the gateway session, client ids, logging."""
