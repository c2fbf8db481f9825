"""Alerting on the core: rules evaluated as samples arrive, alerts and silences, channels and the durable outbox."""
