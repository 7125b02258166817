"""The unit every source produces: some bytes (or the error that prevented getting them) and their origin."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass
class SourceItem:
    source_kind: str  # folder | video | url | web_api | web_page
    source_uri: str  # file path (project-relative when possible) or URL; for video frames, `path#frame=N`
    # (`&xywh=x,y,w,h` after it when only that region of the frame is stored: `facedata.collect.video`)
    query_name: str | None
    fetched_at: dt.datetime
    data: bytes | None = None  # None when fetching failed
    error: str | None = None  # short code + message when it failed, e.g. "too_large: 52 MB > 40 MB"
    label: str | None = None
    extra: dict = field(default_factory=dict)  # page_url, final_url, http_status, video_id, frame_index, ...
    attempts: int = 1
    skipped: bool = False  # not fetched/kept on purpose (robots.txt, a cap, a video frame without a face)
    reused: bool = False  # an earlier run finished this item; the source did not fetch it again
