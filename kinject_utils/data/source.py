"""Where the study's downloaded data comes from: one resolver for MMLU and fictional knowledge.

For a dataset (``mmlu``, ``fictional_knowledge``) the resolver answers with a local folder, trying:

    1. an explicit folder (notebook 01's ``MMLU_DIR`` / ``FICTIONAL_KNOWLEDGE_DIR``), relative paths
       against the project root;
    2. ``$KINJECT_DATA/<dataset>`` when ``KINJECT_DATA`` is set (a folder holding ``mmlu/`` and
       ``fictional_knowledge/``: how development machines and CI point at a local copy);
    3. a copy cached by an earlier download, ``<kinject cache>/data/<dataset>/`` (``KINJECT_CACHE``),
       its files checked against the SHA-256 sums recorded when they were downloaded;
    4. a download from the Hugging Face hub (``cais/mmlu``: the five subjects' test and dev parquet
       files, about 150 KB; ``kaist-ai/fictional-knowledge``: ``fictional_knowledge.json``, about 1 MB),
       written atomically into the cache, each file checked against the hub's SHA-256 where the hub
       sends one (its large-file etag), the size and source logged.

Models never come from here and stay offline under ``HF_HUB_OFFLINE``; data may be fetched even
then. That is why the download is a plain HTTP GET of the hub's ``resolve`` URL (what
``huggingface_hub.hf_hub_download`` requests too) rather than ``hf_hub_download`` itself, which obeys
the process-wide ``HF_HUB_OFFLINE`` that keeps the models offline. ``HF_ENDPOINT`` moves the hub (a
mirror, or the tests' loopback server); ``HF_TOKEN`` is sent when set.

When every place fails, :class:`DataUnavailableError` says where it looked and the fixes.

Example:
    >>> src = resolve_dataset("mmlu")            # doctest: +SKIP
    >>> src.origin, src.path.name                # doctest: +SKIP
    ('cache', 'mmlu')
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..io import atomic_write_bytes, read_json, resolve_path, write_json
from ..log import get_logger
from .errors import DataUnavailableError

__all__ = ["DATASETS", "DATA_ENV", "MMLU_SUBJECTS", "DataSource", "HubDataset", "data_cache_dir", "describe_source",
           "fetch_dataset", "hub_endpoint", "mmlu_parquet", "resolve_dataset"]

_log = get_logger("data")

#: the environment variable naming a folder with ``mmlu/`` and ``fictional_knowledge/`` inside
DATA_ENV = "KINJECT_DATA"
MANIFEST = "kinject-download.json"
#: seconds to wait for the hub to answer (connect or read); a dead server fails within this
TIMEOUT_S = 15.0
#: the paper's five MMLU subjects
MMLU_SUBJECTS: tuple[str, ...] = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")


def mmlu_parquet(subject: str, split: str) -> str:
    """Where ``cais/mmlu`` (and the cache) keeps one subject's split: ``anatomy/dev-00000-of-00001.parquet``."""
    return f"{subject}/{split}-00000-of-00001.parquet"


_MMLU_HUB_FILES = tuple(mmlu_parquet(s, split) for s in MMLU_SUBJECTS for split in ("test", "dev"))


@dataclasses.dataclass(frozen=True)
class HubDataset:
    """One dataset as the hub publishes it: repository, files to fetch, licence, what a local folder holds.

    Attributes:
        repo: the dataset repository (``cais/mmlu``).
        files: paths inside the repository fetched into the cache (the same relative paths).
        local_files: files that make a local folder usable, in either layout it may have (any one group
            complete is enough); used to tell a folder that holds the data from one that does not.
        licence: as published on the hub.
        parameter: notebook 01's parameter naming an explicit folder.
    """

    repo: str
    files: tuple[str, ...]
    local_files: tuple[tuple[str, ...], ...]
    licence: str
    parameter: str


DATASETS: dict[str, HubDataset] = {
    "mmlu": HubDataset(
        repo="cais/mmlu",
        files=_MMLU_HUB_FILES,
        local_files=(tuple(f"{split}/{s}_{split}.csv" for s in MMLU_SUBJECTS for split in ("test", "dev")),
                     _MMLU_HUB_FILES),
        licence="MIT", parameter="MMLU_DIR"),
    "fictional_knowledge": HubDataset(
        repo="kaist-ai/fictional-knowledge", files=("fictional_knowledge.json",),
        local_files=(("fictional_knowledge.json",), ("fictional_knowledge_paraphrased.json",)),
        licence="CC-BY-4.0", parameter="FICTIONAL_KNOWLEDGE_DIR"),
}


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A dataset's local folder and how it was found (``explicit``, ``KINJECT_DATA``, ``cache``, ``hub``)."""

    dataset: str
    path: Path
    origin: str
    note: str = ""


def hub_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` or ``https://huggingface.co``."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def data_cache_dir(dataset: str) -> Path:
    """``<kinject cache>/data/<dataset>/``: where a download is kept (beside the model conversions)."""
    from ..models import cache_dir

    return cache_dir() / "data" / dataset


def _spec(dataset: str) -> HubDataset:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; kinject downloads {sorted(DATASETS)}")
    return DATASETS[dataset]


def _holds(folder: Path, spec: HubDataset) -> bool:
    return any(all((folder / f).is_file() for f in group) for group in spec.local_files)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cached(dataset: str) -> tuple[Path | None, str]:
    """The cached copy if complete and every file matches its recorded SHA-256; else ``(None, why)``."""
    folder = data_cache_dir(dataset)
    try:
        manifest = read_json(folder / MANIFEST)
        sums = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"no cached copy in {folder}"
    for name in _spec(dataset).files:
        want = (sums.get(name) or {}).get("sha256")
        path = folder / name
        if not path.is_file() or not want:
            return None, f"cached copy in {folder} incomplete ({name} missing)"
        got = _sha256(path)
        if got != want:
            _log.warning("data: cached %s does not match its recorded SHA-256 (%s..., expected %s...): "
                         "fetching it again", path, got[:12], want[:12])
            return None, f"cached {path} corrupted (SHA-256 {got[:12]}... != recorded {want[:12]}...)"
    return folder, ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - keep the hub's own headers
        return None


def _request(url: str, method: str) -> urllib.request.Request:
    req = urllib.request.Request(url, method=method, headers={"User-Agent": "kinject"})
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    return req


def _head(url: str) -> dict[str, str]:
    """The hub's headers for a file, without following its redirect to the storage host.

    The hub answers ``resolve`` with the file's SHA-256 (``X-Linked-Etag``, large files) or git etag,
    its size and the commit; a redirect's own headers are the ones that carry them.
    """
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        resp = opener.open(_request(url, "HEAD"), timeout=TIMEOUT_S)
        headers = dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        if exc.code not in (301, 302, 303, 307, 308):
            raise
        headers = dict(exc.headers.items())
    return {k.lower(): v for k, v in headers.items()}


def _download(url: str, dest: Path) -> dict[str, object]:
    """GET ``url`` into ``dest`` atomically; check the hub's SHA-256 and size. Returns the manifest entry."""
    head = _head(url)
    etag = (head.get("x-linked-etag") or head.get("etag") or "").strip('"').removeprefix("W/").strip('"')
    size = head.get("x-linked-size") or head.get("content-length")
    with urllib.request.urlopen(_request(url, "GET"), timeout=TIMEOUT_S) as resp:
        data = resp.read()  # each file is at most about 1 MB
    digest, n = hashlib.sha256(data).hexdigest(), len(data)
    if len(etag) == 64 and etag != digest:
        raise DataUnavailableError(f"{url}: downloaded file's SHA-256 {digest[:12]}... differs from the "
                                   f"hub's {etag[:12]}... (a broken transfer or proxy); run again")
    if size and size.isdigit() and int(size) != n:
        raise DataUnavailableError(f"{url}: got {n} bytes, the hub announced {size}; run again")
    atomic_write_bytes(dest, data)  # written only once checked
    return {"sha256": digest, "bytes": n, "hub_sha256": etag if len(etag) == 64 else None,
            "commit": head.get("x-repo-commit")}


def fetch_dataset(dataset: str, revision: str = "main") -> Path:
    """Download a dataset's files from the hub into its cache folder (atomically, checked); return it.

    Raises:
        DataUnavailableError: the hub cannot be reached or a file fails its check (the message says which).
    """
    spec = _spec(dataset)
    folder = data_cache_dir(dataset)
    base = f"{hub_endpoint()}/datasets/{spec.repo}/resolve/{urllib.parse.quote(revision, safe='')}"
    t0, entries = time.perf_counter(), {}
    for name in spec.files:
        url = f"{base}/{urllib.parse.quote(name)}"
        try:
            entries[name] = _download(url, folder / name)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataUnavailableError(f"download of {url} failed ({reason})") from None
    total = sum(int(e["bytes"]) for e in entries.values())
    write_json(folder / MANIFEST, {"repo": spec.repo, "endpoint": hub_endpoint(), "revision": revision,
                                   "licence": spec.licence, "downloaded": time.strftime("%Y-%m-%d %H:%M:%S"),
                                   "files": entries})
    _log.info("data: downloaded %s from %s: %d file(s), %.1f KB in %.1f s, SHA-256 recorded in %s (licence %s)",
              spec.repo, hub_endpoint(), len(entries), total / 1024, time.perf_counter() - t0,
              folder / MANIFEST, spec.licence)
    return folder


def _local(dataset: str, explicit: str | os.PathLike) -> tuple[DataSource | None, list[str]]:
    """Steps 1-3 of the resolver (no network): a source, or where it looked."""
    spec = _spec(dataset)
    looked: list[str] = []
    if str(explicit).strip():
        folder = resolve_path(explicit)
        if _holds(folder, spec):
            return DataSource(dataset, folder, "explicit", f"{spec.parameter}={explicit}"), looked
        raise DataUnavailableError(f"{dataset}: {spec.parameter} is {explicit!r}, but {folder} does not hold it "
                                   f"(expected {', '.join(spec.local_files[0])}). Fix the path, or set "
                                   f"{spec.parameter} to \"\" to use KINJECT_DATA, the cache or the hub.")
    looked.append(f"{spec.parameter} not set")
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        folder = resolve_path(env) / dataset
        if _holds(folder, spec):
            return DataSource(dataset, folder, DATA_ENV, f"{DATA_ENV}={env}"), looked
        looked.append(f"{DATA_ENV}={env}, but {folder} does not hold it")
    else:
        looked.append(f"{DATA_ENV} not set")
    folder, why = _cached(dataset)
    if folder is not None:
        return DataSource(dataset, folder, "cache", str(folder / MANIFEST)), looked
    looked.append(why)
    return None, looked


def resolve_dataset(dataset: str, explicit: str | os.PathLike = "", *, download: bool = True) -> DataSource:
    """The local folder of ``dataset``: explicit folder, ``KINJECT_DATA``, the cache, else a download.

    Args:
        dataset: ``"mmlu"`` or ``"fictional_knowledge"``.
        explicit: a folder given by the user (``""``: none); it must hold the data.
        download: whether step 4 (the hub) may be tried.

    Raises:
        DataUnavailableError: nothing found; the message lists where it looked (one line per place).
    """
    src, looked = _local(dataset, explicit)
    if src is not None:
        return src
    spec = _spec(dataset)
    if not download:
        raise DataUnavailableError(f"{dataset}: " + "; ".join(looked))
    try:
        folder = fetch_dataset(dataset)
    except DataUnavailableError as exc:
        looked.append(f"hub {hub_endpoint()}/datasets/{spec.repo}: {exc}")
        raise DataUnavailableError(f"{dataset}: " + "; ".join(looked)) from None
    return DataSource(dataset, folder, "hub", f"{spec.repo} via {hub_endpoint()}")


def describe_source(dataset: str, explicit: str | os.PathLike = "") -> str:
    """Where ``dataset`` would come from, without downloading (for ``--plan``)."""
    try:
        src, _ = _local(dataset, explicit)
    except DataUnavailableError as exc:
        return f"error: {exc}"
    if src is not None:
        return f"{src.origin}: {src.path}"
    return (f"download from {hub_endpoint()}/datasets/{_spec(dataset).repo} into {data_cache_dir(dataset)} "
            "(nothing local: no explicit folder, KINJECT_DATA or cache)")
