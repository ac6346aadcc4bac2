"""kopf-facing code: one reconcile module per kind, thin (read, call domain, write status)."""
