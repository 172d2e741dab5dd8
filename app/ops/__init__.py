"""Running Hookbin as a shared service: metrics, readiness, the schema check, structured logs."""
