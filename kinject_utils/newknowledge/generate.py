"""Short-answer generation: the one interface the SliCK categoriser and the SFT evaluation call.

A *generator* is any callable ``generate(prompts, temperature, n, max_new_tokens, seed)`` that
returns, for each prompt, a list of ``n`` answer strings (the text up to the first newline).
``temperature == 0`` means greedy (then ``n`` must be 1). Tests pass a scripted stub; real runs
use :class:`HFGenerator`, which batches a transformers causal LM with left padding.

    gen = HFGenerator(model, tok, batch_size=16)
    gen(["Q: What is the capital of France?\\nA:"], temperature=0.0, n=1, max_new_tokens=8, seed=0)
    # [['Paris']]
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence


class Generator(Protocol):
    def __call__(self, prompts: Sequence[str], temperature: float, n: int, max_new_tokens: int,
                 seed: int) -> list[list[str]]: ...


GenerateFn = Callable[[Sequence[str], float, int, int, int], list[list[str]]]


def first_line(text: str) -> str:
    """The answer part of a completion: everything before the first newline, stripped.

    >>> first_line(" Paris\\nQ: What is")
    'Paris'
    """
    return text.split("\n", 1)[0].strip()


class HFGenerator:
    """Batched greedy/sampled short answers from a transformers causal LM (left padding).

    Each prompt is run through the model once; for sampling its key/value cache is then repeated
    ``n`` times (``DynamicCache.batch_repeat_interleave``), so ``n`` samples cost one prompt pass plus
    ``max_new_tokens`` one-token steps instead of ``n`` prompt passes (``generate(num_return_sequences=n)``
    re-reads the prompt per sample: a 4-shot prompt is ~80 tokens, an answer ~4). The prompt pass
    computes logits for the last position only (``logits_to_keep=1``: Gemma-3's 262k-token head
    over every prompt position would cost more than the model body). :meth:`greedy_and_samples`
    shares one prompt pass between the greedy answer and the samples (SliCK needs both; the prompt
    pass is most of the cost). A row stops at its first newline; the batch stops when every row has one.

    Args:
        model: a causal LM (plain or peft-wrapped), already on its device.
        tok: its tokenizer (pad token set; ``load_causal_lm`` does that).
        batch_size: prompts per forward pass (sampling multiplies the decode rows by ``n``).
    """

    def __init__(self, model: Any, tok: Any, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tok, self.batch_size = model, tok, batch_size
        self._newline_ids: set[int] | None = None

    def _newlines(self) -> set[int]:
        if self._newline_ids is None:  # every token whose text holds a newline ends an answer
            vocab = self.tok.get_vocab()
            ids = {i for t, i in vocab.items() if "\n" in self.tok.convert_tokens_to_string([t])}
            ids |= {i for i in (self.tok.eos_token_id,) if i is not None}
            self._newline_ids = ids
        return self._newline_ids

    def _batch(self, prompts: list[str], temperature: float, n: int, max_new_tokens: int,
               gen: Any, greedy_first: bool = False) -> list[list[str]]:
        import torch

        from ..scoring.shared_prefix import cache_kwargs, output_cache

        device = next(self.model.parameters()).device
        enc = self.tok(prompts, return_tensors="pt", padding=True).to(device)
        mask = enc["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = self.model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos, use_cache=True,
                             logits_to_keep=1)
            cache, logits = output_cache(out), out.logits[:, -1, :]
            greedy_rows = torch.zeros(len(prompts) * n, dtype=torch.bool, device=device)
            greedy_rows[::n] = greedy_first  # the first row of each prompt's group decodes greedily
            if n > 1:
                cache.batch_repeat_interleave(n)
                logits = logits.repeat_interleave(n, dim=0)
                mask = mask.repeat_interleave(n, dim=0)
                pos = pos.repeat_interleave(n, dim=0)
            rows = logits.shape[0]
            stops = torch.tensor(sorted(self._newlines()), device=device)
            done = torch.zeros(rows, dtype=torch.bool, device=device)
            new: list[Any] = []
            next_pos = pos[:, -1:] + 1
            for step in range(max_new_tokens):
                if temperature > 0:
                    probs = torch.softmax(logits.float() / temperature, dim=-1)
                    nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
                    nxt = torch.where(greedy_rows, logits.argmax(-1), nxt)
                else:
                    nxt = logits.argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, self.tok.pad_token_id), nxt)
                new.append(nxt)
                done |= torch.isin(nxt, stops)
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
                out = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos,
                                 **cache_kwargs(self.model, cache))
                cache, logits, next_pos = output_cache(out), out.logits[:, -1, :], next_pos + 1
        ids = torch.stack(new, dim=1).tolist()
        texts = self.tok.batch_decode(ids, skip_special_tokens=True)
        return [[first_line(t) for t in texts[j * n:(j + 1) * n]] for j in range(len(prompts))]

    def greedy_and_samples(self, prompts: Sequence[str], temperature: float, n: int, max_new_tokens: int,
                           seed: int) -> list[list[str]]:
        """Per prompt ``[greedy answer, sample 1, ..., sample n]`` from one shared prompt pass."""
        if not temperature > 0 or n < 1:
            raise ValueError(f"greedy_and_samples needs temperature > 0 and n >= 1, got {temperature}, {n}")
        return self(prompts, temperature, n + 1, max_new_tokens, seed, greedy_first=True)

    def __call__(self, prompts: Sequence[str], temperature: float, n: int, max_new_tokens: int,
                 seed: int, greedy_first: bool = False) -> list[list[str]]:
        import torch

        if temperature == 0 and n != 1:
            raise ValueError("greedy decoding (temperature 0) gives one answer per prompt: use n=1")
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"need n >= 1 and max_new_tokens >= 1, got n={n}, max_new_tokens={max_new_tokens}")
        device = next(self.model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(int(seed))  # same seed -> same samples
        old_side, was_training = self.tok.padding_side, self.model.training
        self.tok.padding_side = "left"
        self.model.eval()
        out: list[list[str]] = []
        try:
            for i in range(0, len(prompts), self.batch_size):
                out.extend(self._batch(list(prompts[i:i + self.batch_size]), temperature, n, max_new_tokens, gen,
                                       greedy_first))
        finally:
            self.tok.padding_side = old_side
            self.model.train(was_training)
        return out
