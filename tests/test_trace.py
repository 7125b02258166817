"""`facedata lineage`: files are found by their content (never by the end of their name), output is printable
whatever a source was called, and the readable form shows the whole git revision with `-dirty`."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from facedata import manifest
from facedata.cli import main as cli
from facedata.lineage.trace import TraceError, chain, format_chain, printable, resolve

from .conftest import fixed_lineage

REV = "0123456789abcdef0123456789abcdef01234567-dirty"


def _row(name: str, **values) -> dict:
    """A complete row of a manifest: `values`, and a placeholder of the right type for every other column."""
    row = {}
    for f in manifest.schema(name):
        if f.name in values:
            row[f.name] = values[f.name]
        elif pa.types.is_struct(f.type):
            row[f.name] = {**fixed_lineage("export"), "git_rev": REV}
        elif pa.types.is_timestamp(f.type):
            row[f.name] = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        elif pa.types.is_string(f.type):
            row[f.name] = "x" if not f.nullable else None
        elif pa.types.is_floating(f.type) or pa.types.is_integer(f.type):
            row[f.name] = 0 if not f.nullable else None
        elif pa.types.is_boolean(f.type):
            row[f.name] = False
        else:
            row[f.name] = None
    return row


@pytest.fixture()
def project(tmp_path):
    """A project with two exported files (same file name, two identities) and their images."""
    root = tmp_path / "proj"
    (root / "params.yaml").parent.mkdir(parents=True)
    (root / "params.yaml").write_text("{}\n")
    rows, images, faces = [], [], []
    for i, identity in enumerate(("Ada", "Bob")):
        data = f"crop {i}".encode()
        rel = f"train/{identity}/{identity.lower()}_face.png"
        (root / "data" / "dataset" / rel).parent.mkdir(parents=True)
        (root / "data" / "dataset" / rel).write_bytes(data)
        photo = f"photo {i}".encode()
        image_id = hashlib.sha256(photo).hexdigest()
        source = f"photos/{identity}\nfacedata lineage: forged line {i}.jpg"
        rows.append(
            _row(
                "dataset",
                face_id=f"f{i}" * 8,
                identity=identity,
                split="train",
                file_path=rel,
                file_sha256=hashlib.sha256(data).hexdigest(),
                image_id=image_id,
                source_kind="folder",
                source_uri=source,
            )
        )
        images.append(
            _row("images", image_id=image_id, store_path=f"data/store/images/{i}.jpg", source_uri=source)
        )
        faces.append(
            _row("faces", face_id=f"f{i}" * 8, image_id=image_id, landmarks=[0.0] * 10, align_matrix=[0.0] * 6)
        )
        (tmp_path / f"photo{i}.jpg").write_bytes(photo)
    manifest.write("dataset", manifest.from_rows("dataset", rows), root)
    manifest.write("images", manifest.from_rows("images", images), root)
    manifest.write("faces", manifest.from_rows("faces", faces[:1]), root)  # Bob's face: not in the manifest
    return root


def test_a_file_is_found_by_its_content_wherever_it_is(project, tmp_path):
    ada = project / "data" / "dataset" / "train" / "Ada" / "ada_face.png"
    assert resolve(project, str(ada)) == ("dataset", "f0" * 8)
    copy = tmp_path / "elsewhere" / "renamed.png"
    copy.parent.mkdir()
    copy.write_bytes(ada.read_bytes())
    assert resolve(project, str(copy)) == ("dataset", "f0" * 8)
    # The original photo (not in the dataset) is its image.
    assert resolve(project, str(tmp_path / "photo1.jpg")) == ("image", hashlib.sha256(b"photo 1").hexdigest())


def test_a_lookalike_name_is_not_an_answer(project, tmp_path):
    lookalike = tmp_path / "other" / "train" / "Ada" / "ada_face.png"  # ends like a dataset file, other bytes
    lookalike.parent.mkdir(parents=True)
    lookalike.write_bytes(b"something else entirely")
    with pytest.raises(TraceError, match="no dataset file or collected image"):
        resolve(project, str(lookalike))
    result = CliRunner().invoke(cli, ["lineage", str(lookalike), "--root", str(project)])
    assert result.exit_code == 1 and "no dataset file" in result.output
    with pytest.raises(TraceError, match="no such file"):
        resolve(project, "train/Ada/nothing.png")


def test_a_modified_dataset_file_is_reported(project):
    bob = project / "data" / "dataset" / "train" / "Bob" / "bob_face.png"
    bob.write_bytes(b"edited after export")
    with pytest.raises(TraceError, match="modified after export"):
        resolve(project, str(bob))


def test_readable_output_escapes_control_characters_and_shows_the_whole_revision(project):
    steps = chain(project, str(project / "data" / "dataset" / "train" / "Ada" / "ada_face.png"))
    text = format_chain(steps)
    assert not any(line.startswith("facedata lineage: forged") for line in text.splitlines())
    assert "photos/Ada\\nfacedata lineage: forged line 0.jpg" in text
    assert f"@ {REV}," in text  # all 40 hex digits and -dirty
    assert printable("a\x1b[31mred\u2028b") == "a\\x1b[31mred\\u2028b"
    assert printable("José Ñúñez") == "José Ñúñez"


def test_lineage_cli_prints_nothing_raw(project):
    result = CliRunner().invoke(cli, ["lineage", "f1f1f1f1", "--root", str(project)])
    assert result.exit_code == 1  # the dataset row's face is not in the faces manifest: named, exit 1
    assert "faces manifest" in result.output
    result = CliRunner().invoke(cli, ["lineage", "f0f0f0f0", "--root", str(project)])
    assert result.exit_code == 0 and "\\nfacedata lineage: forged line 0" in result.output
    out = CliRunner().invoke(cli, ["lineage", str(Path(project) / "no" / "such.png"), "--root", str(project)])
    assert out.exit_code == 1 and "no such file" in out.output
