"""DVC stage `validate` (see dvc.yaml). The logic lives in `facedata.pipeline.validate`."""

from facedata.pipeline.runner import main

if __name__ == "__main__":
    main("validate")
