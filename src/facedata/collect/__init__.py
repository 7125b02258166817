"""Where images come from. Every source yields `SourceItem`s; the ingest stage turns them into stored images,
`images` rows and one `crawl_log` row each, whatever the source."""

from facedata.collect.base import SourceItem

__all__ = ["SourceItem"]
