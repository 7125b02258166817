"""Prefect flows on top of the DVC stages: the build (one task per stage), its schedule, and video indexing."""
