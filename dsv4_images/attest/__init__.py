"""What lets someone else check a published image: the registry's HTTP API (registry.py), artifacts
attached to an image as OCI 1.1 referrers, with the referrers-tag fallback for registries that have no
referrers API (artifacts.py), ..."""
