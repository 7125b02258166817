"""DVC stage `reconstruct3d` (see dvc.yaml). The logic lives in `facedata.pipeline.reconstruct3d`."""

from facedata.pipeline.runner import main

if __name__ == "__main__":
    main("reconstruct3d")
