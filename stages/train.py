"""DVC stage `train` (see dvc.yaml). The logic lives in `facedata.pipeline.train`."""

from facedata.pipeline.runner import main

if __name__ == "__main__":
    main("train")
