"""Data generation: the endpoint client, the request ledger and the instruction-data generators."""
