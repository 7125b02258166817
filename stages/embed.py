"""DVC stage `embed` (see dvc.yaml). The logic lives in `facedata.pipeline.embed`."""

from facedata.pipeline.runner import main

if __name__ == "__main__":
    main("embed")
