"""The pipeline stages as importable functions: `facedata.pipeline.<stage>.run(ctx) -> metrics`."""
