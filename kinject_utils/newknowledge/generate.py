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


TOP_K = 64  # tokens the two-stage sampler draws among first (see HFGenerator._sample)
# A prefix shared by fewer prompts of a call is not cached: those prompts run whole, batched together. Each
# prefix group is its own decode loop, and a decode step costs at least one read of the output head (Gemma-3's
# 262k x 640 floats, ~0.19 s on 2 AVX2 cores, whatever the rows): the few questions that are among their
# relation's exemplars (a prompt of their own) and the 20-fact fictional relations made most of SliCK's loops.
MIN_SHARED = 4


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
        share_prefix: run each few-shot prefix once per call and the prompts' own tokens against it.
        keep_prefixes: keep each prefix's cache for every later call too (SliCK's greedy and sampled calls,
            batch after batch, share a relation's few prefixes). Only while the weights do not change: a
            generator over a model being fine-tuned must not keep them.
    """

    def __init__(self, model: Any, tok: Any, batch_size: int = 16, share_prefix: bool = True,
                 keep_prefixes: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tok, self.batch_size, self.share_prefix = model, tok, batch_size, share_prefix
        self.keep_prefixes = keep_prefixes  # frozen weights only: a kept prefix is stale once the model trains
        self._kept: dict[tuple[int, ...], list[tuple[Any, Any]]] = {}
        self._newline_ids: set[int] | None = None
        self.stats = {"prompts": 0, "prefix_tokens": 0, "own_tokens": 0, "decode_rows": 0, "full_softmax_rows": 0}

    def _newlines(self) -> set[int]:
        if self._newline_ids is None:  # every token whose text holds a newline ends an answer
            vocab = self.tok.get_vocab()
            ids = {i for t, i in vocab.items() if "\n" in self.tok.convert_tokens_to_string([t])}
            ids |= {i for i in (self.tok.eos_token_id,) if i is not None}
            self._newline_ids = ids
        return self._newline_ids

    def _groups(self, prompts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, list[int]]]]]:
        """``[(prefix tokens, [(prompt index, own tokens), ...]), ...]``: prompts grouped by their text up to
        the last blank line (the few-shot exemplars), in first-seen order; a prompt whose encoding does not
        start with its prefix's encoding (a token merged across the boundary), a prompt whose prefix fewer than
        :data:`MIN_SHARED` prompts share, and zero-shot prompts get an empty prefix."""
        groups: dict[str, tuple[list[int], list[tuple[int, list[int]]]]] = {}
        pre_ids: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            full = self.tok(p)["input_ids"]
            cut = p.rfind("\n\n") + 2 if self.share_prefix else 0
            pre = p[:cut] if cut >= 2 else ""
            if pre:
                ids = pre_ids.setdefault(pre, self.tok(pre)["input_ids"])
                if len(ids) >= len(full) or full[:len(ids)] != ids:
                    pre, ids = "", []
            else:
                ids = []
            groups.setdefault(pre, (ids, []))[1].append((i, full[len(ids):]))
        few = [pre for pre, (_, members) in groups.items() if pre and len(members) < MIN_SHARED]
        for pre in few:  # a prefix few prompts share: they join the full prompts, one batch, not a loop each
            groups.setdefault("", ([], []))[1].extend((i, pre_ids[pre] + own) for i, own in groups.pop(pre)[1])
        return list(groups.values())

    def _prefix_kv(self, ids: list[int]) -> list[tuple[Any, Any]] | None:
        if not ids:
            return None
        from ..scoring.prefix_cache import prefix_kv

        if not self.keep_prefixes:
            return prefix_kv(self.model, ids)
        key = tuple(ids)
        if key not in self._kept:  # every call of a run (greedy, samples, each batch of questions) reuses it
            self._kept[key] = prefix_kv(self.model, ids)
            self.stats["prefix_tokens"] += len(ids)
        return self._kept[key]

    def _batch(self, own: list[list[int]], kv: list[tuple[Any, Any]] | None, n_prefix: int, temperature: float,
               n: int, max_new_tokens: int, gen: Any, greedy_first: bool = False) -> list[list[str]]:
        """Answers for one batch of prompts sharing one cached prefix (``kv`` of ``n_prefix`` tokens, or none).

        The prompts' own tokens are left-padded after the prefix; a row leaves the batch (its cache rows
        dropped) as soon as it has written a newline, so short answers stop early."""
        import torch

        from ..scoring.shared_prefix import cache_kwargs, expand_cache, output_cache

        device = next(self.model.parameters()).device
        B, width = len(own), max(len(o) for o in own)
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(o)) + o for o in own], device=device)
        own_mask = torch.tensor([[0] * (width - len(o)) + [1] * len(o) for o in own], device=device)
        mask = torch.cat([torch.ones((B, n_prefix), dtype=own_mask.dtype, device=device), own_mask], dim=1)
        pos = (n_prefix + own_mask.cumsum(-1) - 1).clamp(min=0)
        extra = cache_kwargs(self.model, expand_cache(kv, B)) if kv else {"use_cache": True}
        self.stats["prompts"] += B
        if not self.keep_prefixes:
            self.stats["prefix_tokens"] += n_prefix  # kept prefixes are counted once, when computed
        self.stats["own_tokens"] += int(own_mask.sum())
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, **extra)
            cache, logits = output_cache(out), out.logits[:, -1, :]
            rows = B * n
            greedy_rows = torch.zeros(rows, dtype=torch.bool, device=device)
            greedy_rows[::n] = greedy_first  # the first row of each prompt's group decodes greedily
            if n > 1:
                cache.batch_repeat_interleave(n)
                logits = logits.repeat_interleave(n, dim=0)
                mask = mask.repeat_interleave(n, dim=0)
                pos = pos.repeat_interleave(n, dim=0)
            stops = torch.tensor(sorted(self._newlines()), device=device)
            toks = torch.full((rows, max_new_tokens), pad, dtype=torch.long, device=device)
            alive = torch.arange(rows, device=device)  # the original row of each row still decoding
            next_pos = pos[:, -1:] + 1
            for step in range(max_new_tokens):
                self.stats["decode_rows"] += len(alive)
                nxt = logits.argmax(-1)
                if temperature > 0:
                    sampled = self._sample(logits, temperature, gen)
                    nxt = torch.where(greedy_rows, nxt, sampled)
                toks[alive, step] = nxt
                done = torch.isin(nxt, stops)
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                if bool(done.any()):  # drop finished rows from the batch and the cache
                    keep = (~done).nonzero().squeeze(-1)
                    cache.batch_select_indices(keep)
                    alive, nxt, mask = alive[keep], nxt[keep], mask[keep]
                    next_pos, greedy_rows = next_pos[keep], greedy_rows[keep]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
                out = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos,
                                 **cache_kwargs(self.model, cache))
                cache, logits, next_pos = output_cache(out), out.logits[:, -1, :], next_pos + 1
        texts = self.tok.batch_decode(toks.tolist(), skip_special_tokens=True)
        return [[first_line(t) for t in texts[j * n:(j + 1) * n]] for j in range(B)]

    def _sample(self, logits: Any, temperature: float, gen: Any) -> Any:
        """One token per row from ``softmax(logits / temperature)``, exactly, without a full-vocabulary draw.

        Two stages: with probability ``m`` (the mass of the ``TOP_K`` most likely tokens) draw among them,
        else draw from the full distribution with them removed. The full-vocabulary ``softmax`` +
        ``multinomial`` (as slow as the output head on a 262k vocabulary) runs only for the rare rows that
        take the second branch."""
        import torch

        x = logits.float() / temperature
        lse = torch.logsumexp(x, dim=-1, keepdim=True)
        k = min(TOP_K, x.shape[-1])
        top, idx = x.topk(k, dim=-1)
        p_top = (top - lse).exp()
        u = torch.rand(x.shape[0], 1, generator=gen, device=x.device)
        pick = idx.gather(1, torch.multinomial(p_top, 1, generator=gen))
        tail = (u > p_top.sum(-1, keepdim=True)).squeeze(-1)
        if bool(tail.any()):
            rows = tail.nonzero().squeeze(-1)
            xt = x[rows].scatter(1, idx[rows], float("-inf"))
            self.stats["full_softmax_rows"] += len(rows)
            pick[rows] = torch.multinomial(torch.softmax(xt, -1), 1, generator=gen)
        return pick.squeeze(-1)

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
        was_training = self.model.training
        self.model.eval()
        out: list[list[str] | None] = [None] * len(prompts)
        try:
            for pre, members in self._groups(prompts):
                kv = self._prefix_kv(pre)
                members = sorted(members, key=lambda m: -len(m[1]))  # similar lengths batch together
                for i in range(0, len(members), self.batch_size):
                    chunk = members[i:i + self.batch_size]
                    got = self._batch([o for _, o in chunk], kv, len(pre), temperature, n, max_new_tokens, gen,
                                      greedy_first)
                    for (j, _), a in zip(chunk, got):
                        out[j] = a
        finally:
            self.model.train(was_training)
        return out  # type: ignore[return-value]
