"""The Cloud Function: message contract, handler, results publisher, local runner."""
