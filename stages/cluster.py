"""DVC stage `cluster` (see dvc.yaml). The logic lives in `facedata.pipeline.cluster`."""

from facedata.pipeline.runner import main

if __name__ == "__main__":
    main("cluster")
