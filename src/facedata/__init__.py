"""facedata: lineage-tracked face datasets from cast lists, web pages and video.

The public API (see docs/api.md) is imported lazily: `import facedata` loads no model and no heavy library;
the first call of a function loads what it needs, once per process.

    import facedata as fd
    image = fd.load_image("photo.jpg")
    faces = fd.detect_faces(image)          # boxes, scores, landmarks, quality
    vectors = fd.embed_faces(image, faces)  # one unit vector per face
"""

__version__ = "0.1.0"

__all__ = [
    "Faces",
    "Face3D",
    "Project",
    "cluster_faces",
    "detect_faces",
    "distance",
    "embed_faces",
    "load_image",
    "reconstruct_3d",
]


def __getattr__(name: str):
    if name in __all__:
        import importlib

        # by name, not an import statement: the package's own import graph (stage code deps,
        # facedata.lineage.codedeps) must not grow by the API's dependencies
        return getattr(importlib.import_module("facedata.api"), name)
    raise AttributeError(f"module 'facedata' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
