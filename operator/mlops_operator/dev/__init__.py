"""Local development: a Docker-free Kubernetes control plane, kubectl/helm, installing the CRDs."""
