"""A Wikipedia knowledge base for MMLU (online only): the MediaWiki client and the text cleaning.

The paper's Wikipedia KB was never released; :func:`fetch_wikipedia_kb` rebuilds one from each
subject's central page and the pages it links to. Failures are told apart: no connection is
"cannot reach Wikipedia" (bring a local corpus), while an answer with HTTP 429 or 5xx is "the
server refused/failed (status N), retry later".
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..io import slug
from ..log import get_logger
from ..tasks import Document
from .errors import WikipediaUnavailableError, offline

__all__ = ["MMLU_WIKI_TOPICS", "WIKI_API", "WikipediaUnavailableError", "clean_wiki_text", "fetch_wikipedia_kb"]

_log = get_logger("data.wikipedia")

WIKI_API = "https://{lang}.wikipedia.org/w/api.php"
#: Central pages per MMLU subject (the paper names no titles; these are the obvious ones).
MMLU_WIKI_TOPICS: dict[str, list[str]] = {
    "anatomy": ["Human anatomy"], "astronomy": ["Astronomy"], "college_biology": ["Biology"],
    "college_chemistry": ["Chemistry"], "prehistory": ["Prehistory"],
}
_SKIP_SECTIONS = {"see also", "references", "external links", "further reading", "notes", "bibliography",
                  "sources", "citations", "footnotes", "works cited", "notes and references"}
_SKIP_TITLES = re.compile(r"^(List of|Lists of|Outline of|Index of|Glossary of|Timeline of)\b|\(disambiguation\)$")


def clean_wiki_text(text: str) -> str:
    """Plain-text cleanup of a TextExtracts extract (what wikiextractor does for the paper).

    Drops reference-like sections (See also, References, ...), section headings, math markup
    (``{\\displaystyle ...}``), bracketed citation marks and empty parentheses; collapses whitespace.

    Example:
        >>> clean_wiki_text("Mars is red.[1]\\n\\n== See also ==\\nVenus")
        'Mars is red.'
    """
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        m = re.fullmatch(r"\s*(=+)\s*(.*?)\s*\1\s*", line)
        if m:
            skipping = m.group(2).strip().lower() in _SKIP_SECTIONS
            continue
        if not skipping:
            kept.append(line)
    out = "\n".join(kept)
    out = re.sub(r"\{\\displaystyle[^{}]*(\{[^{}]*\}[^{}]*)*\}", "", out)  # math alt-text, one nesting level
    out = re.sub(r"\[(\d+|citation needed|note \d+|[a-z])\]", "", out)
    out = re.sub(r"\(\s*[;,]?\s*\)", "", out)
    out = re.sub(r"[ \t]+", " ", out)
    out = re.sub(r" +([.,;:])", r"\1", out)
    out = re.sub(r"\n\s*\n+", "\n\n", out)
    return out.strip()


def _wiki_get(session: Any, url: str, params: dict, timeout: float) -> dict:
    try:
        resp = session.get(url, params=params, timeout=timeout,
                           headers={"User-Agent": "kinject/0.1 (knowledge-injection reproduction)"})
    except OSError as exc:  # requests' ConnectionError/Timeout and urllib's URLError are OSErrors
        raise WikipediaUnavailableError(_wiki_offline_message(url, exc)) from None
    status = getattr(resp, "status_code", None)
    if isinstance(status, int) and (status == 429 or status >= 500):
        verb = "refused the request" if status == 429 else "failed"
        why = ", too many requests" if status == 429 else ""
        wait = (getattr(resp, "headers", None) or {}).get("Retry-After")
        raise WikipediaUnavailableError(
            f"the Wikipedia server at {url} {verb} (status {status}{why}) while fetching "
            f"{params.get('titles')!r}; "
            f"retry later{f' (it asks to wait {wait} s)' if wait else ''}. This is not a network problem: "
            "the connection works. Meanwhile MMLU_KB can point at a local folder of documents.")
    try:
        resp.raise_for_status()
        return resp.json()
    except OSError as exc:  # requests' HTTPError (4xx other than 429) is an OSError too
        raise WikipediaUnavailableError(f"the Wikipedia server at {url} rejected the request for "
                                        f"{params.get('titles')!r}: {exc}. Check the page titles "
                                        "(MMLU_WIKI_TOPICS) or use a local corpus as MMLU_KB.") from None


def _wiki_offline_message(url: str, exc: Any = None) -> str:
    why = f" ({exc})" if exc else ""
    return (f"cannot reach Wikipedia at {url}{why}, so no MMLU knowledge base can be built here. "
            "Supply a local corpus instead: put .txt/.md/.jsonl documents in a folder and pass it as "
            "MMLU_KB (notebook 01) or load it with kinject_utils.data.load_documents(folder). "
            "Without a knowledge base MMLU is scored without RAG.")


def fetch_wikipedia_kb(topics: Sequence[str], session: Any = None, *, max_linked: int = 20,
                       lang: str = "en", min_chars: int = 300, timeout: float = 30.0,
                       max_link_pages: int = 10) -> list[Document]:
    """Build a knowledge base from Wikipedia: each topic's central page plus pages it links to.

    Uses the MediaWiki API: ``prop=links`` (namespace 0, paginated) for the linked titles and
    ``prop=extracts&explaintext=1`` (one full page per request, an API limit) for plain text,
    cleaned with :func:`clean_wiki_text`. Links come back alphabetically, so ``max_linked`` titles
    are taken evenly spaced across the whole list (not the first ones, which would all start
    with "A"); list/outline/index/disambiguation pages are skipped.

    Args:
        topics: central page titles (see :data:`MMLU_WIKI_TOPICS`).
        session: anything with ``get(url, params=, timeout=, headers=)`` returning an object with
            ``raise_for_status()`` and ``json()`` (a ``requests.Session``; tests pass a fake).
        max_linked: linked pages kept per topic (0: central pages only).
        min_chars: drop pages whose cleaned text is shorter (stubs, redirects).
        max_link_pages: at most this many ``prop=links`` continuation requests per topic.

    Raises:
        WikipediaUnavailableError: offline (``HF_HUB_OFFLINE`` set or no connection; the message
            says how to bring a local corpus), or the server answered 429/5xx (the message gives
            the status and says to retry later).

    Example:
        >>> kb = fetch_wikipedia_kb(MMLU_WIKI_TOPICS["astronomy"], max_linked=5)  # doctest: +SKIP
    """
    url = WIKI_API.format(lang=lang)
    if session is None:
        if offline():
            raise WikipediaUnavailableError(_wiki_offline_message(url, "offline mode: HF_HUB_OFFLINE is set"))
        import requests

        session = requests.Session()
    base = {"action": "query", "format": "json", "formatversion": "2", "redirects": "1"}
    docs: list[Document] = []
    seen: set[str] = set()
    for topic in topics:
        titles = [topic]
        if max_linked > 0:
            links: list[str] = []
            params = {**base, "prop": "links", "titles": topic, "plnamespace": "0", "pllimit": "max"}
            for _ in range(max_link_pages):
                data = _wiki_get(session, url, params, timeout)
                for page in data.get("query", {}).get("pages", []):
                    links += [lk["title"] for lk in page.get("links", []) if lk.get("ns", 0) == 0]
                cont = data.get("continue")
                if not cont:
                    break
                params = {**params, **cont}
            links = [t for t in dict.fromkeys(links) if not _SKIP_TITLES.search(t)]
            if len(links) > max_linked:
                step = len(links) / max_linked
                links = [links[int(i * step)] for i in range(max_linked)]
            titles += links
        for title in titles:
            data = _wiki_get(session, url, {**base, "prop": "extracts", "explaintext": "1",
                                            "exsectionformat": "wiki", "titles": title}, timeout)
            for page in data.get("query", {}).get("pages", []):
                if page.get("missing") or "extract" not in page:
                    continue
                text = clean_wiki_text(page["extract"])
                if len(text) < min_chars or page["title"] in seen:
                    continue
                seen.add(page["title"])
                docs.append(Document(doc_id=f"wiki/{slug(page['title'], max_len=200)}", title=page["title"],
                                     text=text))
        _log.info("Wikipedia KB: %d pages so far (topic %r)", len(docs), topic)
    return docs

