"""Where the study's downloaded data comes from: one resolver for MMLU, fictional knowledge and EntityQuestions.

For a dataset (``mmlu``, ``fictional_knowledge``, ``entity_questions``) the resolver answers with a local
folder, trying:

    1. an explicit folder (notebook 01's ``MMLU_DIR`` / ``FICTIONAL_KNOWLEDGE_DIR``, notebook 07's
       ``ENTITY_QUESTIONS_DIR``), relative paths against the project root;
    2. ``$KINJECT_DATA/<dataset>`` when ``KINJECT_DATA`` is set (a folder holding ``mmlu/``,
       ``fictional_knowledge/``, ``entity_questions/``: how development machines and CI point at a local copy);
    3. a copy cached by an earlier download, ``<kinject cache>/data/<dataset>/`` (``KINJECT_CACHE``),
       its files checked against the SHA-256 sums recorded when they were downloaded;
    4. a download from the Hugging Face hub (``cais/mmlu``: the five subjects' test and dev parquet
       files, about 150 KB; ``kaist-ai/fictional-knowledge``: ``fictional_knowledge.json``, about 1 MB),
       written atomically into the cache, each file checked against the hub's SHA-256 where the hub
       sends one (its large-file etag), the size and source logged. EntityQuestions is not taken from
       the hub (no mirror whose layout could be checked from here: see :data:`ENTITY_QUESTIONS`) but
       from its authors' GitHub repository at a pinned commit, through the same download and cache.

Models never come from here and stay offline under ``HF_HUB_OFFLINE``; data may be fetched even
then. That is why the download is a plain HTTP GET of the hub's ``resolve`` URL (what
``huggingface_hub.hf_hub_download`` requests too) rather than ``hf_hub_download`` itself, which obeys
the process-wide ``HF_HUB_OFFLINE`` that keeps the models offline. ``HF_ENDPOINT`` moves the hub (a
mirror, or the tests' loopback server); ``HF_TOKEN`` is sent when set. ``KINJECT_GITHUB_RAW`` moves
GitHub's raw-file host the same way (default ``https://raw.githubusercontent.com``; the token is not sent there).

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

__all__ = ["DATASETS", "DATA_ENV", "EQ_RELATIONS", "EQ_SPLITS", "ENTITY_QUESTIONS", "MMLU_SUBJECTS", "DataSource",
           "HubDataset", "data_cache_dir", "describe_source", "eq_file", "fetch_dataset", "github_raw_endpoint",
           "hub_endpoint", "mmlu_parquet", "resolve_dataset"]

_log = get_logger("data")

#: the environment variable naming a folder with ``mmlu/``, ``fictional_knowledge/``, ``entity_questions/`` inside
DATA_ENV = "KINJECT_DATA"
#: the environment variable moving GitHub's raw-file host (the tests' loopback server)
GITHUB_RAW_ENV = "KINJECT_GITHUB_RAW"
MANIFEST = "kinject-download.json"
#: seconds to wait for the hub to answer (connect or read); a dead server fails within this
TIMEOUT_S = 15.0
#: the paper's five MMLU subjects
MMLU_SUBJECTS: tuple[str, ...] = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")


def mmlu_parquet(subject: str, split: str) -> str:
    """Where ``cais/mmlu`` (and the cache) keeps one subject's split: ``anatomy/dev-00000-of-00001.parquet``."""
    return f"{subject}/{split}-00000-of-00001.parquet"


_MMLU_HUB_FILES = tuple(mmlu_parquet(s, split) for s in MMLU_SUBJECTS for split in ("test", "dev"))

#: the 24 Wikidata relations of the EntityQuestions release (one file per relation and split)
EQ_RELATIONS: tuple[str, ...] = ("P106", "P112", "P127", "P131", "P136", "P159", "P17", "P170", "P175", "P176", "P19",
                                 "P20", "P26", "P264", "P276", "P36", "P40", "P407", "P413", "P495", "P50", "P69",
                                 "P740", "P800")
#: the splits kinject fetches (the release also has ``dev``; notebook 07 makes its own dev split)
EQ_SPLITS: tuple[str, ...] = ("train", "test")


def eq_file(relation: str, split: str) -> str:
    """Where the EntityQuestions release keeps one relation's split: ``dataset/train/P17.train.json``."""
    return f"dataset/{split}/{relation}.{split}.json"


@dataclasses.dataclass(frozen=True)
class HubDataset:
    """One dataset as the hub publishes it: repository, files to fetch, licence, what a local folder holds.

    Attributes:
        repo: the dataset repository (``cais/mmlu``).
        files: paths inside the repository fetched into the cache (the same relative paths).
        local_files: files that make a local folder usable, in either layout it may have (any one group
            complete is enough); used to tell a folder that holds the data from one that does not.
        licence: as published on the hub.
        parameter: the notebook parameter naming an explicit folder.
        host: ``hub`` (``<HF_ENDPOINT>/datasets/<repo>/resolve/<revision>/<file>``) or ``github``
            (``<KINJECT_GITHUB_RAW>/<repo>/<revision>/<file>``).
        revision: the revision fetched (a branch or, better, a commit).
    """

    repo: str
    files: tuple[str, ...]
    local_files: tuple[tuple[str, ...], ...]
    licence: str
    parameter: str
    host: str = "hub"
    revision: str = "main"

    def base_url(self, revision: str | None = None) -> str:
        """The address the files are fetched under (``/<file>`` appended)."""
        rev = urllib.parse.quote(revision or self.revision, safe="")
        if self.host == "github":
            return f"{github_raw_endpoint()}/{self.repo}/{rev}"
        return f"{hub_endpoint()}/datasets/{self.repo}/resolve/{rev}"

    def where(self) -> str:
        """The source in words, for messages: ``hub <endpoint>/datasets/<repo>`` or ``GitHub <repo>@<rev>``."""
        if self.host == "github":
            return f"GitHub {github_raw_endpoint()}/{self.repo} at {self.revision[:12]}"
        return f"hub {hub_endpoint()}/datasets/{self.repo}"


#: EntityQuestions (Sciavolino et al. 2021, MIT), the closed-book QA set of Gekhman et al. (2024).
#:
#: Source: the authors' GitHub repository ``princeton-nlp/EntityQuestions`` at commit
#: ``096c261f327431b30af7ff718670f4bd13214908``, whose ``dataset/`` folder holds ``train/``, ``dev/`` and
#: ``test/`` with one file per Wikidata relation and split, ``dataset/<split>/<P-id>.<split>.json``, each a
#: JSON list of ``{"question": str, "answers": [str, ...]}`` (the same ``dataset/`` folder as the authors'
#: ``dataset.zip``). Read from the repository's file listing and ``dataset/dev/P17.dev.json`` at that commit
#: (a later commit adds ``.jsonl`` copies; the README describes those). kinject fetches the train and test
#: files of all 24 relations (48 files, tens of MB). No Hugging Face hub repository was chosen: the one hub
#: copy found (``costadev00/EntityQuestions``, an unofficial, gated JSONL redistribution) does not publish a
#: file layout that could be checked from here. Nothing was downloaded from this machine (it has no internet):
#: the layout is tested against a loopback server serving a generated fixture in it (``tests/hub_server.py``).
ENTITY_QUESTIONS = HubDataset(
    repo="princeton-nlp/EntityQuestions", host="github", revision="096c261f327431b30af7ff718670f4bd13214908",
    files=tuple(eq_file(r, split) for r in EQ_RELATIONS for split in EQ_SPLITS),
    local_files=(tuple(eq_file(r, split) for r in EQ_RELATIONS for split in EQ_SPLITS),
                 tuple(eq_file(r, split).removeprefix("dataset/") for r in EQ_RELATIONS for split in EQ_SPLITS)),
    licence="MIT", parameter="ENTITY_QUESTIONS_DIR")


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
    "entity_questions": ENTITY_QUESTIONS,
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


def github_raw_endpoint() -> str:
    """GitHub's raw-file host: ``KINJECT_GITHUB_RAW`` or ``https://raw.githubusercontent.com``."""
    return os.environ.get(GITHUB_RAW_ENV, "").strip().rstrip("/") or "https://raw.githubusercontent.com"


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


def _request(url: str, method: str, hub: bool = True) -> urllib.request.Request:
    req = urllib.request.Request(url, method=method, headers={"User-Agent": "kinject"})
    token = os.environ.get("HF_TOKEN", "").strip()
    if token and hub:
        req.add_header("Authorization", f"Bearer {token}")
    return req


def _head(url: str, hub: bool = True) -> dict[str, str]:
    """The hub's headers for a file, without following its redirect to the storage host.

    The hub answers ``resolve`` with the file's SHA-256 (``X-Linked-Etag``, large files) or git etag,
    its size and the commit; a redirect's own headers are the ones that carry them.
    """
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        resp = opener.open(_request(url, "HEAD", hub), timeout=TIMEOUT_S)
        headers = dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        if exc.code not in (301, 302, 303, 307, 308):
            raise
        headers = dict(exc.headers.items())
    return {k.lower(): v for k, v in headers.items()}


def _download(url: str, dest: Path, hub: bool = True) -> dict[str, object]:
    """GET ``url`` into ``dest`` atomically; check the hub's SHA-256 and size. Returns the manifest entry.

    Off the hub (``hub=False``) an ETag is not taken for a SHA-256 (GitHub's is not documented as one):
    the size is checked and the SHA-256 of what arrived is recorded for the cache check.
    """
    head = _head(url, hub)
    etag = (head.get("x-linked-etag") or (head.get("etag") if hub else "") or "")
    etag = etag.strip('"').removeprefix("W/").strip('"')
    size = head.get("x-linked-size") or head.get("content-length")
    with urllib.request.urlopen(_request(url, "GET", hub), timeout=TIMEOUT_S) as resp:
        data = resp.read()  # each file is at most a few MB
    digest, n = hashlib.sha256(data).hexdigest(), len(data)
    if len(etag) == 64 and etag != digest:
        raise DataUnavailableError(f"{url}: downloaded file's SHA-256 {digest[:12]}... differs from the "
                                   f"hub's {etag[:12]}... (a broken transfer or proxy); run again")
    if size and size.isdigit() and int(size) != n:
        raise DataUnavailableError(f"{url}: got {n} bytes, the hub announced {size}; run again")
    atomic_write_bytes(dest, data)  # written only once checked
    return {"sha256": digest, "bytes": n, "hub_sha256": etag if len(etag) == 64 else None,
            "commit": head.get("x-repo-commit")}


def fetch_dataset(dataset: str, revision: str | None = None) -> Path:
    """Download a dataset's files (hub or GitHub) into its cache folder (atomically, checked); return it.

    Args:
        revision: the revision to fetch; ``None``: the dataset's own (``main``, or EntityQuestions' pinned commit).

    Raises:
        DataUnavailableError: the host cannot be reached or a file fails its check (the message says which).
    """
    spec = _spec(dataset)
    folder = data_cache_dir(dataset)
    revision = revision or spec.revision
    base = spec.base_url(revision)
    endpoint = github_raw_endpoint() if spec.host == "github" else hub_endpoint()
    t0, entries = time.perf_counter(), {}
    for name in spec.files:
        url = f"{base}/{urllib.parse.quote(name)}"
        try:
            entries[name] = _download(url, folder / name, hub=spec.host == "hub")
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataUnavailableError(f"download of {url} failed ({reason})") from None
    total = sum(int(e["bytes"]) for e in entries.values())
    write_json(folder / MANIFEST, {"repo": spec.repo, "host": spec.host, "endpoint": endpoint, "revision": revision,
                                   "licence": spec.licence, "downloaded": time.strftime("%Y-%m-%d %H:%M:%S"),
                                   "files": entries})
    _log.info("data: downloaded %s from %s: %d file(s), %.1f KB in %.1f s, SHA-256 recorded in %s (licence %s)",
              spec.repo, endpoint, len(entries), total / 1024, time.perf_counter() - t0,
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
        dataset: ``"mmlu"``, ``"fictional_knowledge"`` or ``"entity_questions"``.
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
        looked.append(f"{spec.where()}: {exc}")
        raise DataUnavailableError(f"{dataset}: " + "; ".join(looked)) from None
    return DataSource(dataset, folder, "hub", f"{spec.where()}")


def describe_source(dataset: str, explicit: str | os.PathLike = "") -> str:
    """Where ``dataset`` would come from, without downloading (for ``--plan``)."""
    try:
        src, _ = _local(dataset, explicit)
    except DataUnavailableError as exc:
        return f"error: {exc}"
    if src is not None:
        return f"{src.origin}: {src.path}"
    return (f"download from {_spec(dataset).where()} into {data_cache_dir(dataset)} "
            "(nothing local: no explicit folder, KINJECT_DATA or cache)")
