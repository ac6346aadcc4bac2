"""Pure functions returning child manifests (no API calls): Job, Deployment, Service, HTTPRoute."""
