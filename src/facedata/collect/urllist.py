"""URL lists: a text file with one image URL per line, or a CSV with `url,name` columns.

- Blank lines and lines starting with `#` are not entries.
- CSV when the file ends in .csv/.tsv or its first entry is a header naming a `url` column (any column order,
  e.g. `name,url,license`); without a header a CSV's columns are url, name. Other files: the whole line is
  the URL (URLs may contain commas).
- `name` falls back to the default name (`--name`, or the list's `name` in params.yaml).
Each entry keeps its line number, so reports can say exactly which line did what.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

MAX_LINE = 8192


@dataclass(frozen=True)
class UrlEntry:
    line: int  # 1-based line number in the file
    url: str
    name: str | None
    error: str | None = None  # a line that cannot be an entry (too long, not decodable)


class UrlListError(ValueError):
    pass


def read_url_list(path: str | Path, default_name: str | None = None) -> list[UrlEntry]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UrlListError(f"cannot read URL list {path}: {exc.strerror or exc}") from exc
    text = raw.decode("utf-8-sig", errors="replace")
    lines = text.splitlines()
    data = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")]
    if not data:
        return []
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    first = _split(data[0][1], delimiter)
    has_header = any(c.strip().lower() == "url" for c in first)
    as_csv = has_header or path.suffix.lower() in (".csv", ".tsv")
    url_col, name_col = 0, 1
    if has_header:
        cols = [c.strip().lower() for c in first]
        url_col = cols.index("url")
        name_col = cols.index("name") if "name" in cols else -1
        data = data[1:]
    out = []
    for line_no, line in data:
        if len(line) > MAX_LINE:
            out.append(
                UrlEntry(line_no, line[:200], default_name, f"bad_url: line longer than {MAX_LINE} characters")
            )
            continue
        if not as_csv:
            out.append(UrlEntry(line_no, line.strip(), default_name))
            continue
        cells = _split(line, delimiter)
        url = cells[url_col].strip() if url_col < len(cells) else ""
        name = cells[name_col].strip() if 0 <= name_col < len(cells) else ""
        if not url:
            out.append(UrlEntry(line_no, line.strip(), name or default_name, "bad_url: no URL in this CSV line"))
            continue
        out.append(UrlEntry(line_no, url, name or default_name))
    return out


def _split(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(line), delimiter=delimiter, skipinitialspace=True))
    except (csv.Error, StopIteration):
        return [line]
