"""MovieLens loaders (100K, 1M, 20M, 25M, latest, latest-small) and the verified download.

Three on-disk formats are recognised from the files in the folder:

- **100K** (``ml-100k``): ``u.data`` (tab-separated ``user item rating timestamp``, no header)
  and titles from ``u.item`` (latin-1, ``|``-separated ``id|title|...``). The predefined splits
  ``u1..u5.base/.test`` and ``ua/ub.base/.test`` load with :func:`load_movielens_100k_split`.
- **1M** (``ml-1m``): ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and
  ``movies.dat`` (latin-1, ``MovieID::Title::Genres``).
- **20M / 25M / latest** (``ml-20m``, ...): ``ratings.csv`` (header
  ``userId,movieId,rating,timestamp``) and ``movies.csv`` (``movieId,title,genres``, quoted
  CSV, utf-8).

The result keeps the explicit ratings as values (binarize with ``Interactions.binarize(4)`` or
:func:`~recsys.data.interactions.to_implicit`), Unix-second timestamps and titles. The item id
map holds the movies that have at least one rating (MovieLens-20M lists 27,278 movies in
``movies.csv`` but 26,744 are rated).

Downloads: :func:`fetch_movielens` downloads the official GroupLens archive once into a cache
folder (``$RECSYS_DATA_DIR`` or ``~/.cache/recsys/datasets``), verifies its SHA-256, and extracts
it atomically (a failed or corrupt download leaves nothing behind). GroupLens itself publishes
only MD5 sums; the pinned SHA-256 values below are those of the archives whose MD5 matches the
published one, as recorded independently by several public projects. ``ml-latest`` and
``ml-latest-small`` are re-released from time to time, so no hash is pinned for them: they are
downloaded with a logged warning that shows the SHA-256 to pin (``sha256=...``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from recsys.data.delimited import read_delimited
from recsys.data.errors import DataError
from recsys.data.interactions import Interactions
from recsys.data.predefined import split_from_parts
from recsys.data.splits import Split

__all__ = [
    "MOVIELENS_ARCHIVES",
    "default_cache_dir",
    "download_archive",
    "fetch_movielens",
    "load_movielens",
    "load_movielens_100k_split",
]

log = logging.getLogger(__name__)

_BASE_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Archive:
    """One official archive: where it is, the folder it unpacks to, and its SHA-256."""

    url: str
    folder: str
    sha256: str | None


MOVIELENS_ARCHIVES: dict[str, Archive] = {
    "100k": Archive(
        f"{_BASE_URL}/ml-100k.zip",
        "ml-100k",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    ),
    "1m": Archive(
        f"{_BASE_URL}/ml-1m.zip",
        "ml-1m",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    ),
    "20m": Archive(
        f"{_BASE_URL}/ml-20m.zip",
        "ml-20m",
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    ),
    "25m": Archive(
        f"{_BASE_URL}/ml-25m.zip",
        "ml-25m",
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
    ),
    # re-released over time: no pinned hash
    "latest-small": Archive(f"{_BASE_URL}/ml-latest-small.zip", "ml-latest-small", None),
    "latest": Archive(f"{_BASE_URL}/ml-latest.zip", "ml-latest", None),
}

_100K_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
_RATING_NAMES = ["user", "item", "rating", "timestamp"]


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$RECSYS_DATA_DIR`` if set, else ``~/.cache/recsys/datasets``."""
    env = os.environ.get("RECSYS_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "recsys" / "datasets"


def _safe_members(zf: zipfile.ZipFile, archive: str) -> None:
    for name in zf.namelist():
        p = PurePosixPath(name)
        if p.is_absolute() or ".." in p.parts or ":" in name:
            raise DataError(
                f"the archive contains an unsafe path {name!r}",
                path=archive,
                fix="use the official archive",
            )


def download_archive(
    url: str,
    cache_dir: str | os.PathLike[str],
    folder: str,
    *,
    sha256: str | None,
    timeout: float = 60.0,
) -> Path:
    """Download the zip at ``url`` once and extract it to ``cache_dir / folder``.

    If that folder exists already, nothing is downloaded. Otherwise the archive is streamed to a
    temporary file while its SHA-256 is computed; a mismatch with ``sha256`` raises
    :class:`DataError` and deletes the download. Extraction goes to a temporary folder that is
    renamed into place only when complete, so an interrupted or failed run never leaves a partial
    data set. With ``sha256=None`` the archive is accepted with a logged warning that shows its
    hash. ``url`` may be ``file://`` (used by the tests).
    """
    cache = Path(cache_dir)
    target = cache / folder
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_zip = tempfile.mkstemp(prefix=f".{folder}-", suffix=".zip.part", dir=cache)
    tmp_dir: str | None = None
    try:
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(
                f"could not download {url} ({reason})",
                path=target,
                fix="check the network connection, or download and unpack the archive by hand "
                "and pass its folder as the path",
            ) from None
        got = digest.hexdigest()
        if sha256 is None:
            log.warning(
                "downloaded %s without a checksum to compare with; its SHA-256 is %s "
                "(pass sha256=%r to pin it)",
                url,
                got,
                got,
            )
        elif got.lower() != sha256.lower():
            raise DataError(
                f"SHA-256 mismatch for {url}: expected {sha256.lower()}, got {got} "
                "(the download was deleted)",
                path=target,
                fix="retry the download; if the archive changed on purpose, pass its new sha256",
            )
        tmp_dir = tempfile.mkdtemp(prefix=f".{folder}-", suffix=".extract", dir=cache)
        try:
            with zipfile.ZipFile(tmp_zip) as zf:
                _safe_members(zf, url)
                zf.extractall(tmp_dir)
        except zipfile.BadZipFile as exc:
            raise DataError(
                f"{url} is not a valid zip archive ({exc})",
                path=target,
                fix="check the URL or download it again",
            ) from None
        inner = Path(tmp_dir) / folder
        if not inner.is_dir():
            tops = [p for p in Path(tmp_dir).iterdir()]
            inner = tops[0] if len(tops) == 1 and tops[0].is_dir() else Path(tmp_dir)
        try:
            os.replace(inner, target)
        except OSError:
            if not target.is_dir():  # not a concurrent download that finished first
                raise
        return target
    finally:
        Path(tmp_zip).unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def fetch_movielens(
    variant: str = "100k",
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
) -> Path:
    """Return the folder of a MovieLens variant, downloading it once into ``cache_dir``.

    ``url`` and ``sha256`` override the official archive and its pinned hash (the pinned hash is
    used when ``sha256`` is None; variants without one are accepted with a warning).
    """
    archive = _archive(variant)
    return download_archive(
        url or archive.url,
        cache_dir or default_cache_dir(),
        archive.folder,
        sha256=sha256 or archive.sha256,
    )


def _key(variant: str) -> str:
    return str(variant).lower().removeprefix("ml-")


def _archive(variant: str) -> Archive:
    key = _key(variant)
    if key not in MOVIELENS_ARCHIVES:
        raise DataError(
            f"unknown MovieLens variant {variant!r}",
            fix=f"choose one of {sorted(MOVIELENS_ARCHIVES)} or pass a folder path",
        )
    return MOVIELENS_ARCHIVES[key]


def _resolve_folder(
    source: str | os.PathLike[str] | None,
    variant: str | None,
    download: bool,
    cache_dir: str | os.PathLike[str] | None,
) -> Path:
    """The folder holding the files: ``source`` if it is one; else the cached (or, with
    ``download``, freshly downloaded) folder of the variant named by ``variant`` or ``source``.
    A ``source`` path that does not exist yet is where a download is unpacked to."""
    path = None if source is None else Path(source)
    if path is not None and path.is_dir():
        return path
    name = variant
    if name is None and source is not None and _key(str(source)) in MOVIELENS_ARCHIVES:
        name, path = str(source), None
    if name is None:
        raise DataError(
            "folder not found",
            path=path,
            fix=f"pass a MovieLens folder, or a variant ({sorted(MOVIELENS_ARCHIVES)}) with "
            "download=True",
        )
    archive = _archive(name)
    target = path if path is not None else Path(cache_dir or default_cache_dir()) / archive.folder
    if target.is_dir():
        return target
    if not download:
        raise DataError(
            f"MovieLens {name} not found",
            path=target,
            fix="pass download=True to fetch it from GroupLens, or the folder of an unpacked copy",
        )
    return download_archive(archive.url, target.parent, target.name, sha256=archive.sha256)


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


def _read_ratings(path: Path, fmt: str) -> dict[str, np.ndarray]:
    if fmt == "csv":
        wanted = {
            "user": ("userId", "int"),
            "item": ("movieId", "int"),
            "value": ("rating", "float"),
            "timestamp": ("timestamp", "time"),
        }
        return read_delimited(path, wanted, sep=",", header=True, names=None, encoding="utf-8")
    wanted = {
        "user": (0, "int"),
        "item": (1, "int"),
        "value": (2, "float"),
        "timestamp": (3, "time"),
    }
    sep = "\t" if fmt == "100k" else "::"
    return read_delimited(
        path, wanted, sep=sep, header=False, names=_RATING_NAMES, encoding="latin-1"
    )


def _read_titles(folder: Path, fmt: str) -> dict[int, str] | None:
    """Movie id -> title, or None when the movie file is absent."""
    name = {"100k": "u.item", "1m": "movies.dat", "csv": "movies.csv"}[fmt]
    path = folder / name
    if not path.is_file():
        log.info("no %s in %s: loading without titles", name, folder)
        return None
    titles: dict[int, str] = {}
    if fmt == "csv":
        with open(path, encoding="utf-8", newline="") as fh:
            rows = csv.reader(fh)
            header = next(rows, None)
            if not header or "movieId" not in header or "title" not in header:
                raise DataError(
                    f"expected a header with movieId and title, found {header}",
                    path=path,
                    line=1,
                    fix="use the movies.csv of the archive",
                )
            ci, ct = header.index("movieId"), header.index("title")
            for n, row in enumerate(rows, start=2):
                if not row:
                    continue
                titles[_title_id(row, ci, path, n)] = row[ct] if ct < len(row) else ""
        return titles
    sep = "|" if fmt == "100k" else "::"
    with open(path, encoding="latin-1") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep)
            titles[_title_id(fields, 0, path, n)] = fields[1] if len(fields) > 1 else ""
    return titles


def _title_id(fields: list[str], col: int, path: Path, line: int) -> int:
    try:
        return int(fields[col])
    except (ValueError, IndexError):
        raise DataError(
            f"expected a numeric movie id, found {fields[col] if col < len(fields) else ''!r}",
            path=path,
            line=line,
            fix="fix or remove this line",
        ) from None


def _detect(folder: Path) -> tuple[str, Path]:
    for fmt, name in (("100k", "u.data"), ("1m", "ratings.dat"), ("csv", "ratings.csv")):
        if (folder / name).is_file():
            return fmt, folder / name
    raise DataError(
        "no MovieLens ratings file (u.data, ratings.dat or ratings.csv) in this folder",
        path=folder,
        fix="pass the folder of an unpacked MovieLens archive",
    )


def load_movielens(
    source: str | os.PathLike[str] | None = None,
    *,
    variant: str | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    titles: bool = True,
    train_file: str | None = None,
    test_file: str | None = None,
) -> Interactions | Split:
    """Load a MovieLens data set with ratings as values, timestamps and (optionally) titles.

    Args:
        source: a folder holding the unpacked files, or a variant name (``"100k"``, ``"1m"``,
            ``"20m"``, ``"25m"``, ``"latest-small"``, ``"latest"``) looked up in ``cache_dir``.
            A folder that does not exist is where ``download`` unpacks ``variant`` to.
        variant: which MovieLens; when ``source`` is a folder it only checks the folder's format
            (``None``: detected from the files).
        download: fetch the variant from GroupLens (SHA-256 checked) if it is not there yet.
        cache_dir: where downloads live when no folder is given (:func:`default_cache_dir`).
        titles: also read movie titles.
        train_file, test_file: give both (e.g. ``"u1.base"``, ``"u1.test"``) to load a
            predefined split from files in the folder (same format as the ratings file); the
            result is then a :class:`Split` with one shared id space.

    Returns:
        :class:`Interactions`, or a :class:`Split` when ``train_file``/``test_file`` are given.
    """
    if (train_file is None) != (test_file is None):
        raise ValueError("give both train_file and test_file, or neither")
    if source is None and variant is None:
        variant = "100k"
    folder = _resolve_folder(source, variant, download, cache_dir)
    fmt, ratings = _detect(folder)
    if variant is not None:
        expected = {"100k": "100k", "1m": "1m"}.get(_key(variant), "csv")
        if fmt != expected:
            raise DataError(
                f"the folder holds MovieLens files of the {fmt} format ({ratings.name}), not "
                f"those of MovieLens {variant}",
                path=folder,
                fix="pass the matching variant, or variant=None to detect it",
            )
    title_map = _read_titles(folder, fmt) if titles else None
    if train_file is not None and test_file is not None:
        train_path, test_path = folder / train_file, folder / test_file
        for p in (train_path, test_path):
            if not p.is_file():
                raise DataError("split file not found", path=p, fix="check train_file / test_file")
        split = split_from_parts(
            _read_ratings(train_path, fmt),
            _read_ratings(test_path, fmt),
            train_source=str(train_path),
            test_source=str(test_path),
            item_titles=title_map,
        )
        split.report["method"] = f"movielens_{train_file}_{test_file}"
        return split
    cols = _read_ratings(ratings, fmt)
    return Interactions.from_columns(
        cols["user"],
        cols["item"],
        cols["value"],
        cols["timestamp"],
        item_titles=title_map,
        source=str(ratings),
    )


def load_movielens_100k_split(
    source: str | os.PathLike[str] | None = None,
    fold: str = "u1",
    *,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    titles: bool = True,
) -> Split:
    """One of MovieLens-100K's predefined splits: ``u1``..``u5`` (5-fold cross-validation, each
    test set 20% of the ratings) or ``ua``/``ub`` (exactly 10 ratings per user in test).

    Train and test share one id space (the union of their ids). The counts of test ratings on
    users or items absent from train are in ``report``.
    """
    if fold not in _100K_FOLDS:
        raise ValueError(f"fold must be one of {_100K_FOLDS}, got {fold!r}")
    split = load_movielens(
        source,
        variant="100k",
        download=download,
        cache_dir=cache_dir,
        titles=titles,
        train_file=f"{fold}.base",
        test_file=f"{fold}.test",
    )
    assert isinstance(split, Split)
    split.report["method"] = f"movielens_100k_{fold}"
    return split
