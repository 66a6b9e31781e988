"""Tests of deploy/: the Prometheus rules with promtool, the real Alertmanager routing to a webhook."""
