"""Who is on screen when: cast identification in broadcast video (`facedata index-video`).

decode (frames at `video.fps`, shot cuts) -> detect + embed (`facedata.faces.analyze.FaceAnalyzer`, batched)
-> track (`track`: box overlap + embedding similarity, across short occlusions, never across a cut unless the
face clearly matches) -> identify each track (`naming`: quality-weighted aggregate embedding, open-set,
calibrated confidence, co-occurring tracks never one person) -> segments (`segments`) -> manifests
`video_tracks` / `video_segments`, a timeline PNG and a thumbnail per track (`index`, `render`).
"""
