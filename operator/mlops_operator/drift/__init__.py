"""Pure logic of DriftPolicies: spec checks, sketches and drift statistics."""
