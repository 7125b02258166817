"""facedata tests."""
