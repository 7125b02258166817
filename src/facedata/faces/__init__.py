"""Face detection, alignment and quality."""
