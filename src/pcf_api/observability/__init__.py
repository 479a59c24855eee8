"""Logs, trace context and (later) metrics: what an operator sees of the service."""
