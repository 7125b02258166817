"""Data quality gates: Great Expectations suites over the manifests and their report."""
