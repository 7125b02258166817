"""DVC stage `detect` (see dvc.yaml). The logic lives in `facedata.pipeline.detect`."""

from facedata.pipeline.runner import main

if __name__ == "__main__":
    main("detect")
