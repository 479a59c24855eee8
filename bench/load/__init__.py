"""The step load test of one pcf-api process (``make load-test``, docs/capacity.md)."""
