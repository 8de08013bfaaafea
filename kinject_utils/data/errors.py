"""Errors the data sources raise when a source cannot be reached, and the offline check they share."""
from __future__ import annotations


class DataUnavailableError(RuntimeError):
    """A data source cannot be reached here; the message says which and how to supply it."""


class WikipediaUnavailableError(DataUnavailableError):
    """Wikipedia cannot be reached or refused the request; the message says why and what to do."""


def offline() -> bool:
    """True when the Hugging Face hub is switched off (``HF_HUB_OFFLINE``): hub sources fail at once."""
    from ..models import is_offline

    return is_offline()
