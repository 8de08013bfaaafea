"""Any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, Ollama, llama.cpp, hosted APIs).

Requests go through the ``openai`` client (an optional extra: ``pip install kinject[openai]``),
which retries timeouts, connection errors, 408/409/429 and 5xx with exponential backoff and
honours ``Retry-After``. A body that is not a chat completion is retried here, as often. While a
request is in flight a log line reports every ``heartbeat_s`` seconds how long it has waited, so a
hung server is visible at once; when the attempts run out the error names the two settings that
bound the wait, notebook 02's ``REQUEST_TIMEOUT_S`` and ``REQUEST_RETRIES``.

The API key is read from the environment variable NAMED by ``api_key_env`` when the client is
made; it is never kept on the object, and everything this module returns, raises or logs goes
through :func:`kinject_utils.secrets.redact` (the key whole or cut, any ``Bearer`` or
``sk-`` token), because servers and proxies echo requests back.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from typing import Any

from ..log import get_logger
from ..secrets import RedactingFilter, check_env_name, redact
from .base import ChatBackend, ParaphraseBackendError

__all__ = ["INSTALL_HINT", "OpenAICompatibleBackend"]

INSTALL_HINT = "pip install kinject[openai]"
_NO_KEY = "EMPTY"  # what vLLM and Ollama accept when they check no key
log = get_logger("paraphrase")


def _openai() -> Any:
    try:
        import openai
    except ImportError:
        raise ParaphraseBackendError(
            "PARAPHRASE_BACKEND 'openai' needs the openai client package, which is not installed. "
            f"Fix: {INSTALL_HINT} (or pip install openai), or use PARAPHRASE_BACKEND 'local' or "
            "'generator'.") from None
    return openai


class OpenAICompatibleBackend(ChatBackend):
    """Chat completions from an OpenAI-compatible server.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        model: the model id the server knows.
        api_key_env: NAME of the environment variable holding the key (never the key itself;
            unset: the placeholder ``EMPTY`` is sent, which local servers accept).
        timeout: seconds to wait for one response (notebook 02: ``REQUEST_TIMEOUT_S``).
        max_retries: extra attempts after the first (notebook 02: ``REQUEST_RETRIES``).
        temperature: sampling temperature sent to the server.
        max_tokens: ``max_tokens`` sent to the server (``None``: not sent).
        heartbeat_s: log a "still waiting" line this often while a request is in flight.
    """

    name = "openai"
    default_per_call = 10  # the paper asked GPT-4 for all 10 in one reply

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_retries: int = 3, temperature: float = 0.7, max_tokens: int | None = None,
                 heartbeat_s: float = 15.0) -> None:
        super().__init__()
        if not isinstance(base_url, str) or not re.match(r"^https?://", base_url):
            raise ValueError(f"OPENAI_BASE_URL must start with http:// or https://, got {redact(str(base_url))!r} "
                             "(e.g. 'http://localhost:8000/v1')")
        if not model:
            raise ValueError("PARAPHRASE_MODEL must name the model id the server serves (e.g. 'mistral-7b-instruct')")
        self.api_key_env = check_env_name(api_key_env)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"REQUEST_TIMEOUT_S must be a number of seconds > 0, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"REQUEST_RETRIES must be an integer >= 0, got {max_retries!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.temperature, self.max_tokens, self.heartbeat_s = temperature, max_tokens, float(heartbeat_s)
        self.counters.update(no_response=0)
        self._filter = RedactingFilter([self.api_key_env])
        for name in ("kinject", "openai", "httpx", "httpx2"):  # whatever they log is redacted too
            lg = get_logger() if name == "kinject" else logging.getLogger(name)
            if not any(isinstance(f, RedactingFilter) and self.api_key_env in f.env_names for f in lg.filters):
                lg.addFilter(self._filter)

    def __repr__(self) -> str:
        return (f"OpenAICompatibleBackend(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, timeout={self.timeout}, max_retries={self.max_retries})")

    def cache_identity(self) -> dict[str, Any]:
        # base_url is left out on purpose: the same model served elsewhere gives the same text.
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def redact(self, text: str) -> str:
        return redact(text, env_names=[self.api_key_env])

    def _fix(self) -> str:
        return (f"Check that the server at {self.base_url} is up and serves model {self.model!r}; for a slow "
                f"server raise REQUEST_TIMEOUT_S (now {self.timeout:g}) or REQUEST_RETRIES (now "
                f"{self.max_retries}) in notebook 02's parameters or the config's notebooks: '02' section.")

    def _client(self, seen: dict[str, int]) -> Any:
        openai = _openai()

        def on_request(_request: Any) -> None:
            seen["requests"] += 1

        def on_response(response: Any) -> None:
            seen["responses"] += 1
            seen["server_errors"] += response.status_code >= 500 or response.status_code == 429

        hooks = {"request": [on_request], "response": [on_response]}
        return openai.OpenAI(base_url=self.base_url, api_key=os.environ.get(self.api_key_env) or _NO_KEY,
                             timeout=self.timeout, max_retries=self.max_retries,
                             http_client=openai.DefaultHttpxClient(event_hooks=hooks))

    def _heartbeat(self, seen: dict[str, int], stop: threading.Event) -> None:
        t0 = time.monotonic()
        while not stop.wait(self.heartbeat_s):
            log.info(f"waiting for {self.url}: {time.monotonic() - t0:.0f}s so far, attempt "
                     f"{max(seen['requests'], 1)} of {self.max_retries + 1} (REQUEST_TIMEOUT_S={self.timeout:g}, "
                     f"REQUEST_RETRIES={self.max_retries})")

    def _one_call(self, payload: dict[str, Any], seen: dict[str, int]) -> str:
        """One call through the client (its own retries included); the response body's text."""
        openai = _openai()
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(seen, stop), daemon=True)
        beat.start()
        try:
            raw = self._client(seen).chat.completions.with_raw_response.create(**payload)
            return raw.http_response.text
        except openai.APIStatusError as exc:
            code = exc.status_code
            detail = self.redact(exc.response.text if exc.response is not None else str(exc))[:300]
            hint = (f" Check the key in the environment variable {self.api_key_env} (it is "
                    f"{'set' if os.environ.get(self.api_key_env) else 'NOT set'})." if code in (401, 403) else
                    " Check OPENAI_BASE_URL (it should end in /v1) and PARAPHRASE_MODEL." if code == 404 else
                    f" {self._fix()}")
            raise ParaphraseBackendError(f"{self.url} answered HTTP {code} after {seen['requests']} attempt(s): "
                                         f"{detail}.{hint}") from None
        except openai.APITimeoutError:
            raise ParaphraseBackendError(f"{self.url}: no response within REQUEST_TIMEOUT_S={self.timeout:g}s in "
                                         f"{seen['requests']} attempt(s). {self._fix()}") from None
        except openai.APIConnectionError as exc:
            raise ParaphraseBackendError(f"{self.url}: connection failed {seen['requests']} time(s) "
                                         f"({self.redact(str(exc.__cause__ or exc))[:200]}). {self._fix()}") from None
        finally:
            stop.set()

    def complete(self, messages: list[dict[str, str]], seed: int, max_tokens: int | None = None) -> str:
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                   "seed": int(seed)}
        if (max_tokens or self.max_tokens) is not None:
            payload["max_tokens"] = int(max_tokens or self.max_tokens)
        last = ""
        for attempt in range(self.max_retries + 1):
            seen = {"requests": 0, "responses": 0, "server_errors": 0}
            try:
                text = self._one_call(payload, seen)
            finally:
                self.counters["requests"] += seen["requests"]
                self.counters["retries"] += max(seen["requests"] - 1, 0) + (attempt > 0)
                self.counters["server_errors"] += seen["server_errors"]
                self.counters["no_response"] += seen["requests"] - seen["responses"]
            try:
                content = json.loads(text)["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    raise TypeError("content is not a string")
                return self.redact(content)
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
                self.counters["bad_bodies"] += 1
                # redact the whole body first, then cut: a cut can never expose a piece of the key
                last = f"response is not a chat completion ({type(exc).__name__}): {self.redact(text)[:200]!r}"
        raise ParaphraseBackendError(f"{self.url} failed {self.max_retries + 1} times; last: {last}. {self._fix()}")
