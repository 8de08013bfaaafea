"""The paper's paraphrase prompt and its rendering for one document."""
from __future__ import annotations

from ..io import content_hash

__all__ = ["PARAPHRASE_PROMPT", "PROMPT_ID", "render_prompt"]

# different paraphrases that keep all the information, returned as a JSON string with one key,
# "paraphrases". {num_paraphrases} and {text} are filled in by render_prompt.
PARAPHRASE_PROMPT = (
    "Your task is to paraphrase a text paragraph. The paragraph is given below. "
    "Make sure to keep the same meaning and all the information: every name, number, date and "
    "fact must stay. Change the wording. Give {num_paraphrases} different paraphrases of the "
    "paragraph, as different from one another as possible. "
    'Return a JSON formatted string with one key, "paraphrases", holding a list of the '
    "paraphrases.\n\n"
    "Input paragraph:\n{text}"
)
#: Short id of the prompt template; part of every cache key, so editing the prompt redoes the work.
PROMPT_ID = content_hash(PARAPHRASE_PROMPT, length=8)


def render_prompt(text: str, num_paraphrases: int, template: str = PARAPHRASE_PROMPT) -> str:
    """Fill the paper's prompt for one document.

    Example:
        >>> "Give 3 different paraphrases" in render_prompt("Some text.", 3)
        True
    """
    if num_paraphrases < 1:
        raise ValueError(f"num_paraphrases must be >= 1, got {num_paraphrases}")
    # str.replace, not str.format: a document may contain braces.
    return template.replace("{num_paraphrases}", str(num_paraphrases)).replace("{text}", text.strip())

