"""DVC stage `check` (see dvc.yaml). The logic lives in `facedata.pipeline.check`."""

from facedata.pipeline.runner import main

if __name__ == "__main__":
    main("check")
