"""Delivery: the durable outbox, the retry policy and the worker that drains one into an exporter."""
