"""DVC stage `ingest` (see dvc.yaml). The logic lives in `facedata.pipeline.ingest`."""

from facedata.pipeline.runner import main

if __name__ == "__main__":
    main("ingest")
