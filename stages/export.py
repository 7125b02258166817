"""DVC stage `export` (see dvc.yaml). The logic lives in `facedata.pipeline.export`."""

from facedata.pipeline.runner import main

if __name__ == "__main__":
    main("export")
