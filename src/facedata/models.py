"""Model resolution: one registry of the weights facedata uses, and one rule for finding them.

A model is named in params.yaml (`dlib-resnet`, `yunet`, `facenet-vggface2`...). Its files are looked for, in
order, in

1. `$FACEDATA_MODELS_DIR/<folder>/` (tests and offline sites point this at a shared models folder),
2. the user cache `$XDG_CACHE_HOME/facedata/models/<folder>/` (default `~/.cache/facedata/models`),
3. the Python package that ships them (dlib's models in `face_recognition_models`, MTCNN in facenet-pytorch),
   or the cache of the library that downloads them itself (facenet-pytorch: `$TORCH_HOME/checkpoints`),
4. the official URL, downloaded into the user cache (unless `FACEDATA_OFFLINE=1`),

and every file is checked against its sha256 before use, so a corrupt or substituted file is refused.
A user's own ONNX recognizer is named `onnx:<path>` instead (see `facedata.embed.onnx`); it is not in the
registry, and its version is the file's sha256.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MODELS_DIR_ENV = "FACEDATA_MODELS_DIR"
OFFLINE_ENV = "FACEDATA_OFFLINE"


class ModelError(RuntimeError):
    """A model's weights cannot be found, downloaded or verified."""


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str | None
    url: str | None = None  # official source; a `.bz2` URL is decompressed after download


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # detector | embedder | landmarks | 3d
    folder: str  # sub-folder under a models directory
    version: str
    files: tuple[ModelFile, ...]
    license: str
    description: str
    package: tuple[str, str] | None = None  # (importable package, sub-folder holding the files)
    torch_checkpoints: bool = False  # also look in $TORCH_HOME/checkpoints (where facenet-pytorch caches)
    extra: dict = field(default_factory=dict)


_FACENET_COMMIT = "787da06156087cd6b616fe6608213722bddc30cd"
_FACENET_RAW = f"https://raw.githubusercontent.com/timesler/facenet-pytorch/{_FACENET_COMMIT}/data"

REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.name] = spec
    return spec


register(
    ModelSpec(
        name="dlib-resnet",
        kind="embedder",
        folder="dlib",
        version="dlib_face_recognition_resnet_model_v1",
        files=(
            ModelFile(
                "dlib_face_recognition_resnet_model_v1.dat",
                "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
                "http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2",
            ),
        ),
        license="CC0 (Davis King); trained on data including VGGFace2/FaceScrub, see dlib.net",
        description="dlib ResNet-29 face descriptor, 128-d; expects 150x150 aligned chips (LFW: BENCHMARKS.md)",
        package=("face_recognition_models", "models"),
    )
)
register(
    ModelSpec(
        name="dlib-shape5",
        kind="landmarks",
        folder="dlib",
        version="shape_predictor_5_face_landmarks",
        files=(
            ModelFile(
                "shape_predictor_5_face_landmarks.dat",
                "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
                "http://dlib.net/files/shape_predictor_5_face_landmarks.dat.bz2",
            ),
        ),
        license="CC0",
        description="dlib 5-point landmark predictor (dlib's own chip alignment)",
        package=("face_recognition_models", "models"),
    )
)
register(
    ModelSpec(
        name="mtcnn",
        kind="detector",
        folder="mtcnn_facenet_pytorch",
        version=f"facenet-pytorch@{_FACENET_COMMIT[:12]}",
        files=(
            ModelFile(
                "pnet.pt",
                "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
                f"{_FACENET_RAW}/pnet.pt",
            ),
            ModelFile(
                "rnet.pt",
                "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
                f"{_FACENET_RAW}/rnet.pt",
            ),
            ModelFile(
                "onet.pt",
                "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
                f"{_FACENET_RAW}/onet.pt",
            ),
        ),
        license="MIT (facenet-pytorch); MTCNN by Zhang et al. 2016",
        description="MTCNN cascade (P/R/O-Net): boxes, scores and 5 landmarks",
        package=("facenet_pytorch", "data"),
    )
)


register(
    ModelSpec(
        name="yunet",
        kind="detector",
        folder="yunet",
        version="yunet_s_2023mar",
        files=(
            ModelFile(
                "face_detection_yunet_2023mar.onnx",
                "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
                "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/"
                "0047ac24afb1a50a0c6105001c89d1b5b805dbf1/onnx/yunet_s_640_640.onnx",
            ),
        ),
        license="Apache-2.0 (libfacedetection.train; opencv_zoo ships the same file under MIT)",
        description="YuNet face detector for cv2.FaceDetectorYN: boxes, scores, 5 landmarks; ms per image on CPU",
    )
)
register(
    ModelSpec(
        name="retinaface",
        kind="detector",
        folder="retinaface_mnet025",
        version="retinaface_mnet025@2b075657aef9",
        files=(
            ModelFile(
                "mobilenet0.25_Final.pth",
                "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1",
                "https://raw.githubusercontent.com/biubug6/Face-Detector-1MB-with-landmark/"
                "2b075657aef954b9426f938ac7fce100b6910fe6/weights/mobilenet0.25_Final.pth",
            ),
        ),
        license="MIT (biubug6/Face-Detector-1MB-with-landmark); RetinaFace by Deng et al. 2019",
        description="RetinaFace MobileNet-0.25 (torch): boxes, scores, 5 landmarks; batches on a GPU",
    )
)
register(
    ModelSpec(
        name="facenet-vggface2",
        kind="embedder",
        folder="facenet_vggface2",
        version="20180402-114759-vggface2",
        files=(
            ModelFile(
                "20180402-114759-vggface2.pt",
                "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
                "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
            ),
        ),
        license="MIT (facenet-pytorch, port of davidsandberg/facenet); trained on VGGFace2 (research use)",
        description="FaceNet InceptionResnetV1 (VGGFace2), 512-d; expects 160x160 MTCNN-style crops",
        torch_checkpoints=True,
    )
)


# --- 3D faces: 3DDFA_V2 regressor weights + 3DDFA v1 sparse bases, Surrey Face Model -------------
_TDDFA2 = "https://raw.githubusercontent.com/cleardusk/3DDFA_V2/1b6c67601abffc1e9f248b291708aef0e43b55ae"
_TDDFA1 = "https://raw.githubusercontent.com/cleardusk/3DDFA/3545f355bfc71e5748fa915b13932958363135d7"
_EOS = "https://raw.githubusercontent.com/patrikhuber/eos/ce984207a51c2edd2e7568a64fec9b98ef61aeed/share"

register(
    ModelSpec(
        name="3ddfa-v2-mb05",
        kind="3d",
        folder="3ddfa_v2",
        version="3ddfa_v2@1b6c6760+3ddfa_v1@3545f355",
        files=(
            ModelFile(
                "weights/mb05_120x120.pth",
                "f93ed7f1c4c0382b16d7c18480a5f67473c1917a47475a9823924f38aeb27280",
                f"{_TDDFA2}/weights/mb05_120x120.pth",
            ),
            ModelFile(
                "configs/param_mean_std_62d_120x120.pkl",
                "090d7150f77cb66c29ddae21e4508fbde59123dcd1dea7facc24a7ed06d1c795",
                f"{_TDDFA2}/configs/param_mean_std_62d_120x120.pkl",
            ),
            ModelFile(
                "v1_sparse68_bases/u_base.txt",
                "1ea7c3116070aeee720605a4a44ca9db582ac550095c321c3cf65ec925fe43cf",
                f"{_TDDFA1}/c++/weights/u_base.txt",
            ),
            ModelFile(
                "v1_sparse68_bases/w_shp_base.txt",
                "bec9a2189eb77c61ff940c801dcd9e5cd7f1973b6d91949494d9cd7ac121b7f6",
                f"{_TDDFA1}/c++/weights/w_shp_base.txt",
            ),
            ModelFile(
                "v1_sparse68_bases/w_exp_base.txt",
                "4dc637c92c34bfd69faab74cafce23913f2b6181ff00c57a7ab69c1204d20b18",
                f"{_TDDFA1}/c++/weights/w_exp_base.txt",
            ),
        ),
        license="MIT (3DDFA_V2, 3DDFA code); parameter statistics and bases derive from the BFM: academic only",
        description="3DDFA_V2 MobileNet-0.5 3DMM regressor (62 params) + 68-point sparse BFM bases",
    )
)
register(
    ModelSpec(
        name="sfm-3448",
        kind="3d",
        folder="sfm_3448",
        version="eos@ce984207 sfm_shape_3448",
        files=(
            ModelFile(
                "sfm_shape_3448.bin",
                "43750338ae533e7fb981e924b6f67ebde3d292f15ec4fc886ae5af14308ad980",
                f"{_EOS}/sfm_shape_3448.bin",
            ),
            ModelFile(
                "expression_blendshapes_3448.bin",
                "a77c81712fc5e8b08a1be4cd2824d51514e5bde6578109ae5240dfb3489efd43",
                f"{_EOS}/expression_blendshapes_3448.bin",
            ),
            ModelFile(
                "ibug_to_sfm.txt",
                "810810c457184526c7d54305ecbc5da764e2431b5e66025d921a7d424aebfac9",
                f"{_EOS}/ibug_to_sfm.txt",
            ),
            ModelFile(
                "sfm_3448_edge_topology.json",
                "5934e5ec34dd6779fda06d28a1f8d02ca9a238bff882e5ccd6da5af9fffe61d5",
                f"{_EOS}/sfm_3448_edge_topology.json",
            ),
            ModelFile(
                "sfm_model_contours.json",
                "c9e69bfa995ab19ac6b27abb07729eb0520a00bb192be12426ca6bce76f3fded",
                f"{_EOS}/sfm_model_contours.json",
            ),
        ),
        license="Surrey Face Model: non-commercial use only (cvssp.org/facemodel); eos files Apache-2.0",
        description="Surrey Face Model (3448 vertices, 63 shape PCs, 6 expression blendshapes) for eos fitting",
    )
)


_NO_DOWNLOADS = False


@contextlib.contextmanager
def no_downloads():
    """Within this block, `locate` never downloads: a missing file is a ModelError."""
    global _NO_DOWNLOADS
    before, _NO_DOWNLOADS = _NO_DOWNLOADS, True
    try:
        yield
    finally:
        _NO_DOWNLOADS = before


def models_dirs() -> list[Path]:
    """The directories searched, in order (not counting package data and downloads)."""
    dirs = []
    if os.environ.get(MODELS_DIR_ENV):
        dirs.append(Path(os.environ[MODELS_DIR_ENV]).expanduser())
    dirs.append(cache_dir())
    return dirs


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "facedata" / "models"


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ModelError(
            f"unknown model {name!r}; available: {', '.join(sorted(REGISTRY))} (see `facedata models`)"
        )
    return REGISTRY[name]


SHA_CACHE_NAME = "file-sha256.json"


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, remembered by (path, size, mtime) in this process and in the user cache, so every stage
    and worker process checking multi-megabyte weights does not hash them again."""
    key, stamp = path, [size, mtime_ns]
    disk = _read_sha_cache()
    hit = disk.get(key)
    if isinstance(hit, list) and len(hit) == 3 and hit[:2] == stamp:
        return str(hit[2])
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    digest = h.hexdigest()
    if size >= 1 << 20:  # small files hash faster than the cache reads
        _write_sha_cache({**disk, key: [*stamp, digest]})
    return digest


def _sha_cache_path() -> Path:
    return cache_dir().parent / SHA_CACHE_NAME


def _read_sha_cache() -> dict:
    import json

    try:
        data = json.loads(_sha_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_sha_cache(data: dict) -> None:
    """Best effort: a read-only home or a concurrent writer only costs a re-hash later."""
    from facedata import atomic

    if len(data) > 1000:  # entries of files long gone
        data = {k: v for k, v in data.items() if os.path.exists(k)}
    with contextlib.suppress(OSError):
        atomic.write_json(_sha_cache_path(), data)


def file_sha256(path: Path) -> str:
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class ModelId:
    """A model as far as its outputs go: name, version, and the sha256 of its weights. Rows record it in their
    lineage, and a row made by another model identity is recomputed, never reused."""

    name: str
    version: str
    sha256: str


def combined_sha256(parts: dict[str, str]) -> str:
    """One sha256 for several weights files (`{label: file sha256}`); a single file keeps its own."""
    if len(parts) == 1:
        return next(iter(parts.values()))
    h = hashlib.sha256()
    for label in sorted(parts):
        h.update(f"{label}\0{parts[label]}\n".encode())
    return h.hexdigest()


def identity(name: str) -> ModelId:
    """The identity of registered model `name`, from its verified files (located as `locate` does)."""
    spec = get_spec(name)
    files = locate(name)
    return ModelId(name, spec.version, combined_sha256({f: file_sha256(p) for f, p in files.items()}))


def file_identity(name: str, path: str | os.PathLike) -> ModelId:
    """The identity of a user's own weights file (`onnx:<path>`, fine-tuned weights): its version is its hash."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} not found ({name})")
    digest = file_sha256(path)
    return ModelId(name, f"sha256:{digest[:16]}", digest)


def combine(name: str, version: str, parts: list[ModelId]) -> ModelId:
    """A model made of several (a recognizer and the landmark models of its views...)."""
    return ModelId(name, version, combined_sha256({f"{i}:{m.name}": m.sha256 for i, m in enumerate(parts)}))


def _verified(path: Path, mf: ModelFile) -> bool:
    return path.is_file() and (mf.sha256 is None or file_sha256(path) == mf.sha256)


def _package_dir(spec: ModelSpec) -> Path | None:
    if spec.package is None:
        return None
    pkg, sub = spec.package
    found = importlib.util.find_spec(pkg)  # no import: face_recognition_models' __init__ needs pkg_resources
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / sub


def torch_checkpoints_dir() -> Path:
    """Where torch (and facenet-pytorch) cache downloaded weights: $TORCH_HOME/checkpoints."""
    base = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch"
    )
    return Path(base) / "checkpoints"


def candidates(spec: ModelSpec) -> list[tuple[str, Path]]:
    out = [(str(d), d / spec.folder) for d in models_dirs()]
    pkg = _package_dir(spec)
    if pkg is not None:
        out.append((f"package {spec.package[0]}", pkg))
    if spec.torch_checkpoints:
        out.append(("torch cache", torch_checkpoints_dir()))
    return out


def locate(name: str, download: bool | None = None) -> dict[str, Path]:
    """Paths of every file of model `name`, verified; downloads into the cache when allowed and needed."""
    spec = get_spec(name)
    found: dict[str, Path] = {}
    rejected: list[str] = []
    for mf in spec.files:
        for _, folder in candidates(spec):
            path = folder / mf.name
            if path.is_file():
                if _verified(path, mf):
                    found[mf.name] = path
                    break
                rejected.append(f"{path} (sha256 mismatch)")
    missing = [mf for mf in spec.files if mf.name not in found]
    if missing:
        if download is None:
            download = not _NO_DOWNLOADS and os.environ.get(OFFLINE_ENV, "0") not in ("1", "true", "yes")
        if not download:
            raise ModelError(_missing_message(spec, missing, rejected, offline=True))
        for mf in missing:
            found[mf.name] = _download(spec, mf, rejected)
    return found


def locate_file(name: str, filename: str | None = None) -> Path:
    files = locate(name)
    if filename is None:
        return next(iter(files.values()))
    return files[filename]


def _missing_message(spec: ModelSpec, missing: list[ModelFile], rejected: list[str], offline: bool) -> str:
    where = ", ".join(str(folder) for _, folder in candidates(spec))
    msg = f"model {spec.name!r}: {', '.join(m.name for m in missing)} not found in {where}"
    if rejected:
        msg += f"; rejected: {', '.join(rejected)}"
    if offline:
        msg += f"; downloads are off ({OFFLINE_ENV}=1)"
    return msg + f". Put the files in $FACEDATA_MODELS_DIR/{spec.folder}/ or allow the download."


def _download(spec: ModelSpec, mf: ModelFile, rejected: list[str]) -> Path:
    if not mf.url:
        raise ModelError(_missing_message(spec, [mf], rejected, offline=False) + " (no official URL is known)")
    target = cache_dir() / spec.folder / mf.name
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    try:
        with urllib.request.urlopen(mf.url, timeout=60) as resp, open(tmp, "wb") as out:  # noqa: S310
            if mf.url.endswith(".bz2"):
                shutil.copyfileobj(bz2.BZ2File(resp), out)
            else:
                shutil.copyfileobj(resp, out)
        got = file_sha256(Path(tmp))
        if mf.sha256 is not None and got != mf.sha256:
            raise ModelError(f"downloaded {mf.url} has sha256 {got}, expected {mf.sha256}; refusing it")
        os.replace(tmp, target)
        return target
    except OSError as exc:
        raise ModelError(
            f"model {spec.name!r}: download of {mf.url} failed ({exc}); "
            f"{_missing_message(spec, [mf], rejected, offline=False)}"
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def status() -> list[dict]:
    """Every registered model with where its files are found (or why not), for `facedata models`."""
    rows = []
    for spec in REGISTRY.values():
        where, ok = [], True
        for mf in spec.files:
            hit = None
            for label, folder in candidates(spec):
                if _verified(folder / mf.name, mf):
                    hit = f"{folder / mf.name} ({label})"
                    break
            ok &= hit is not None
            missing = f"{mf.name}: missing" + (f" (downloadable from {mf.url})" if mf.url else "")
            where.append(hit or missing)
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "version": spec.version,
                "available": ok,
                "files": where,
                "license": spec.license,
                "description": spec.description,
            }
        )
    return rows
