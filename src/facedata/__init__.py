"""facedata: lineage-tracked face datasets from cast lists, web pages and video."""

__version__ = "0.1.0"
