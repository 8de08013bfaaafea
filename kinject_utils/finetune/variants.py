"""The adapters of notebook 03: FT-reg, FT-par(N) and the paraphrase sweep, their corpora and index.

Variants (see :func:`plan_variants`): FT-reg (knowledge base only), FT-par(N) (knowledge base + N
paraphrases per document) at a fixed number of epochs (the paper's setting), and the same corpora
at a fixed number of optimiser steps, so that wording variety can be told apart from extra training
(FT-par(10) at 5 epochs takes 11x the steps of FT-reg).

The adapter index (``layout.adapter_index``) stores each ``adapter_dir`` relative to the results
folder; :func:`read_adapter_index` resolves it against the folder it is read from, so a results
folder that was moved or copied finds its own adapters.
"""
from __future__ import annotations

import dataclasses
import os
import random
import time
from typing import Any, Callable, Mapping, Sequence

from .. import layout
from ..io import read_csv, slug, write_csv
from ..log import get_logger
from .checkpoints import read_train_log
from .chunking import chunk_corpus
from .config import FinetuneConfig
from .loop import train_adapter
from .schedule import plan_steps

log = get_logger("finetune")

INDEX_COLUMNS = ["model", "task", "variant", "n_paraphrases", "budget", "budget_steps", "epochs", "sweep",
                 "tokens", "final_loss", "wall_s", "adapter_dir"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One adapter to train: which corpus (N paraphrases per document) under which budget.

    Attributes:
        name: folder and method name (``ft-reg``, ``ft-par``, ``ft-par-3``, ``ft-reg-fixed``...).
        n_paraphrases: paraphrases per document added to the knowledge base (0 = FT-reg).
        budget: ``"epochs"`` (the paper's setting), ``"steps"`` (fixed optimiser steps) or ``"tokens"``
            (fixed training tokens: the repetition control).
        max_steps: the step budget when ``budget == "steps"``.
        max_tokens: the token budget when ``budget == "tokens"``.
        sweep: which sweep(s) the adapter belongs to: ``"epochs"``, ``"steps"``, ``"epochs+steps"``, or
            ``"none"`` (the headline FT-reg when it trains its own epochs: not a point of the sweep).
        epochs: epochs of this adapter when not the configured ones (0: the config's).
    """

    name: str
    n_paraphrases: int
    budget: str = "epochs"
    max_steps: int = 0
    sweep: str = "epochs"
    epochs: int = 0
    max_tokens: int = 0

    def config(self, cfg: FinetuneConfig) -> FinetuneConfig:
        """``cfg`` for this adapter: its own epochs, or its fixed step or token budget."""
        if self.budget == "steps":
            cfg = cfg.replace(budget="steps", max_steps=self.max_steps)
        elif self.budget == "tokens":
            cfg = cfg.replace(budget="tokens", max_tokens=self.max_tokens)
        return cfg.replace(epochs=self.epochs) if self.epochs else cfg


def corpus_for(docs: Sequence[Any], paraphrases: Mapping[str, Sequence[str]], n: int) -> list[str]:
    """Training texts of FT-par(n): every document, then round 1 of paraphrases, round 2, ...

    Args:
        docs: ``tasks.Document`` objects (``doc_id``, ``text``).
        paraphrases: doc_id -> rewordings; documents with fewer than ``n`` contribute what they have.
        n: paraphrases per document (0 = FT-reg: the knowledge base alone).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n (paraphrases per document) must be an integer >= 0, got {n!r}")
    texts = [d.text for d in docs]
    for r in range(n):
        texts.extend(paraphrases[d.doc_id][r] for d in docs if len(paraphrases.get(d.doc_id, ())) > r)
    return texts


def plan_variants(sweep: Sequence[int], n_par: int, steps_of: Callable[[int], int], *,
                  fixed_budget: str = "ft-reg", available: int | None = None, reg_epochs: int = 0,
                  epochs: int = 0, tokens_of: Callable[[int], int] | None = None) -> list[Variant]:
    """The adapters for one model x task: FT-reg, FT-par(n_par), the sweep, the fixed-step sweep.

    Fixed-epoch variants train each corpus for the configured epochs (the paper). Fixed-step
    variants train every corpus for the same number of optimiser steps S, so they differ only in
    wording variety: ``fixed_budget="ft-reg"`` sets S to FT-reg's steps (each fact is still seen
    about ``epochs`` times, spread over 1+N wordings; cheap), ``"ft-par-max"`` to the largest
    FT-par's steps (FT-reg then trains ~(1+N) times longer on the same text; costly), ``"off"``
    skips them. A fixed-step variant whose corpus already trains for S steps at fixed epochs is not
    trained twice: that adapter is marked ``sweep="epochs+steps"``. With ``"ft-par-max"`` FT-reg's
    twin is the repetition control ``ft-reg-rep``: the raw text repeated for as many training tokens
    as the largest FT-par (``tokens_of(n)``: tokens FT-par(n) trains on at fixed epochs; steps when
    not given), so that pair differs only in wording; it is compared directly, not a sweep point.

    ``reg_epochs`` (when set and not ``epochs``, the configured epochs) trains the headline FT-reg for
    its own number of epochs (chosen by held-out loss: notebook 03's ``REG_EPOCHS``); the sweep's
    N = 0 point at the configured epochs is then its own adapter, ``ft-par-0``.

    Args:
        sweep: paraphrase counts to train at fixed epochs (0 = FT-reg).
        n_par: N of the headline FT-par (Table 2); 0 or None-equivalent skips FT-par.
        steps_of: n -> optimiser steps of FT-par(n) at fixed epochs.
        available: the most paraphrases every document has; larger counts are dropped with a message.
    """
    if fixed_budget not in ("ft-reg", "ft-par-max", "off"):
        raise ValueError(f"fixed_budget must be 'ft-reg', 'ft-par-max' or 'off', got {fixed_budget!r}")
    counts = sorted({0, *[int(n) for n in sweep], *([int(n_par)] if n_par else [])})
    if any(n < 0 for n in counts):
        raise ValueError(f"paraphrase counts must be >= 0, got {sorted(counts)}")
    if available is not None:
        dropped = [n for n in counts if n > available]
        if dropped:
            log.warning("only %d paraphrases per document available: skipping N=%s", available, dropped)
        counts = [n for n in counts if n <= available]

    own_reg = bool(reg_epochs) and reg_epochs != epochs

    def name(n: int) -> str:
        if n == 0:
            return "ft-par-0" if own_reg else "ft-reg"
        return "ft-par" if n == n_par else f"ft-par-{n}"

    def fixed_name(n: int) -> str:
        return "ft-reg-rep" if n == 0 and fixed_budget == "ft-par-max" else f"{name(n)}-fixed"

    steps = {n: steps_of(n) for n in counts}
    out: list[Variant] = [Variant("ft-reg", 0, "epochs", 0, "none", reg_epochs)] if own_reg else []
    target = None
    if fixed_budget != "off" and len(counts) > 1:
        target = steps[0] if fixed_budget == "ft-reg" else steps[max(counts)]
    for n in counts:
        if own_reg and n == 0 and 0 not in [int(x) for x in sweep]:
            continue  # the sweep has no N = 0 point: FT-reg is the headline adapter alone
        out.append(Variant(name(n), n, "epochs", 0, "epochs+steps" if steps[n] == target else "epochs"))
    if target is not None:
        for n in counts:
            if steps[n] == target:
                continue
            if n == 0 and fixed_budget == "ft-par-max" and tokens_of is not None:
                out.append(Variant("ft-reg-rep", 0, "tokens", 0, "none", max_tokens=tokens_of(max(counts))))
            else:
                out.append(Variant(fixed_name(n), n, "steps", target, "steps"))
    return out


def split_heldout_paraphrases(paraphrases: Mapping[str, Sequence[str]], n_docs: int, per_doc: int = 2,
                              seed: int = 0) -> tuple[dict[str, list[str]], list[str]]:
    """Hold out ``per_doc`` paraphrases of ``n_docs`` random documents for the learning-rate search.

    The paper held out 240 chunks x 2 paraphrases per task; here the held-out rewordings are
    removed from the training paraphrases so the search measures generalisation to new wording.

    Returns:
        (training paraphrases, held-out texts).
    """
    eligible = sorted(d for d, ps in paraphrases.items() if len(ps) > per_doc)
    rng = random.Random(seed)
    chosen = set(rng.sample(eligible, min(n_docs, len(eligible))))
    train: dict[str, list[str]] = {}
    held: list[str] = []
    for d, ps in paraphrases.items():
        ps = list(ps)
        if d in chosen:
            held.extend(ps[-per_doc:])
            ps = ps[:-per_doc]
        train[d] = ps
    return train, held


def paraphrases_for(results_dir: str | os.PathLike, task: Any) -> tuple[dict[str, list[str]], str]:
    """Paraphrases for FT-par: notebook 02's file, else the task's own rewordings, else none.

    Returns:
        (doc_id -> paraphrases, a line saying where they came from).
    """
    from ..paraphrase import read_paraphrases

    path = layout.paraphrase_file(results_dir, task.name)
    if path.exists():
        par = read_paraphrases(results_dir, task.name)
        return par, f"{path} ({len(par)} documents)"
    if task.paraphrases:
        n = len(task.paraphrases)
        return dict(task.paraphrases), f"the task's own rewordings (paraphrases.jsonl, {n} documents)"
    return {}, f"none: {path} does not exist and the task ships no rewordings (FT-par is skipped)"


def tokenizer_for(model_name: str) -> Any:
    """The model's tokenizer alone (planning and chunking need no weights)."""
    from transformers import AutoTokenizer

    from ..models import resolve_model_dir

    return AutoTokenizer.from_pretrained(resolve_model_dir(model_name))


def variant_corpora(tok: Any, task: Any, paraphrases: Mapping[str, Sequence[str]], cfg: FinetuneConfig, *,
                    sweep: Sequence[int] = (0,), n_par: int = 0, fixed_budget: str = "off",
                    reg_epochs: int = 0) -> tuple[dict[int, list[str]], list[Variant]]:
    """The training texts per paraphrase count and the variants to train (no model needed)."""
    counts = [n for n in sorted({0, *sweep, n_par}) if n >= 0]
    available = min((len(paraphrases.get(d.doc_id, ())) for d in task.docs), default=0)
    corpora: dict[int, list[str]] = {}
    steps: dict[int, int] = {}
    tokens: dict[int, int] = {}
    for n in counts:
        if n <= available:
            corpora[n] = corpus_for(task.docs, paraphrases, n)
            chunks = chunk_corpus(corpora[n], tok, cfg.chunk_len, pack=cfg.packing)
            real = sum(map(len, chunks))
            p = plan_steps(len(chunks), cfg, real)
            steps[n], tokens[n] = p["total_steps"], round(real * p["total_steps"] / p["steps_per_epoch"])
    return corpora, plan_variants(sweep, n_par, lambda n: steps[n], fixed_budget=fixed_budget, available=available,
                                  reg_epochs=reg_epochs, epochs=cfg.epochs, tokens_of=lambda n: tokens[n])


@dataclasses.dataclass
class TrainJob:
    """One adapter to train (or find trained), as a job any executor can run (:mod:`kinject_utils.execute`).

    Picklable: the corpus and settings travel with it, so a Ray worker needs only the model's files.
    Returns the adapter's index row (:func:`train_variants`).
    """

    model_name: str
    task_name: str
    variant: Variant
    corpus: list
    cfg: FinetuneConfig
    out: str
    progress: bool = True
    gpu = True

    @property
    def label(self) -> str:
        return f"{self.model_name} / {self.task_name} / {self.variant.name}"

    def __call__(self) -> dict[str, Any]:
        v, t0 = self.variant, time.perf_counter()
        res = train_adapter(self.model_name, self.corpus, self.cfg, self.out, progress=self.progress)
        secs = 0.0 if res.skipped else time.perf_counter() - t0
        log.info("%s / %s / %s: %s, %d steps (%g epochs), %d tokens, final loss %.3f, %.0f tok/s, %.1f%% real "
                 "tokens, %.1f s this run", self.model_name, self.task_name, v.name,
                 "already trained" if res.skipped else "trained", res.steps, res.epochs, res.tokens,
                 res.final_loss, res.tokens_per_s, 100 * res.real_token_fraction, secs)
        return {"model": self.model_name, "task": self.task_name, "variant": v.name,
                "n_paraphrases": v.n_paraphrases, "budget": v.budget, "budget_steps": res.steps,
                "epochs": res.epochs, "sweep": v.sweep, "tokens": res.tokens, "final_loss": res.final_loss,
                "wall_s": res.wall_s, "adapter_dir": str(self.out), "trained_now_s": round(secs, 2)}


def variant_jobs(model_name: str, task: Any, paraphrases: Mapping[str, Sequence[str]], cfg: FinetuneConfig,
                 results_dir: str | os.PathLike, *, sweep: Sequence[int] = (0,), n_par: int = 0,
                 fixed_budget: str = "off", reg_epochs: int = 0, progress: bool = True) -> list[TrainJob]:
    """Every adapter of one model x task as a :class:`TrainJob` (arguments as :func:`train_variants`)."""
    if not task.docs:
        raise ValueError(f"task {task.name} has no knowledge base (kb.jsonl is empty): nothing to fine-tune on")
    corpora, variants = variant_corpora(tokenizer_for(model_name), task, paraphrases, cfg, sweep=sweep,
                                        n_par=n_par, fixed_budget=fixed_budget, reg_epochs=reg_epochs)
    return [TrainJob(model_name, task.name, v, corpora[v.n_paraphrases], v.config(cfg),
                     str(layout.adapter_dir(results_dir, slug(model_name), task.name, v.name)), progress)
            for v in variants]


def train_variants(model_name: str, task: Any, paraphrases: Mapping[str, Sequence[str]], cfg: FinetuneConfig,
                   results_dir: str | os.PathLike, *, sweep: Sequence[int] = (0,), n_par: int = 0,
                   fixed_budget: str = "off", reg_epochs: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """Train (or find already trained) every adapter of one model x task, here, one after another; return index rows.

    Adapters go to :func:`kinject_utils.layout.adapter_dir`; a variant whose manifest matches the
    model, data hash and settings is not retrained, a half-trained one resumes. Each variant's
    training seconds are logged (``wall_s`` is the adapter's total, earlier runs included). The jobs
    are :func:`variant_jobs`'s, which an executor may also run elsewhere (notebook 03's ``EXECUTOR``).

    Returns:
        Rows for the adapter index (:data:`INDEX_COLUMNS`, ``adapter_dir`` as a usable path; written
        relative by :func:`write_adapter_index`), plus ``trained_now_s`` (0 when already trained).
    """
    return [job() for job in variant_jobs(model_name, task, paraphrases, cfg, results_dir, sweep=sweep, n_par=n_par,
                                          fixed_budget=fixed_budget, reg_epochs=reg_epochs, progress=progress)]


def write_adapter_index(results_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> os.PathLike:
    """Write the adapter index atomically, ``adapter_dir`` relative to ``results_dir``, rows sorted."""
    out = [{**{c: r.get(c, "") for c in INDEX_COLUMNS},
            "adapter_dir": layout.to_relative(results_dir, r["adapter_dir"])} for r in rows]
    out.sort(key=lambda r: (str(r["model"]), str(r["task"]), str(r["variant"])))
    return write_csv(out, layout.adapter_index(results_dir), columns=INDEX_COLUMNS)


def read_adapter_index(results_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of the adapter index with ``adapter_dir`` resolved against ``results_dir`` ([] if none).

    A row whose folder holds no finished adapter (``manifest.json``) is an error naming the
    folder and the fix, instead of being scored as something it is not.
    """
    from .config import MANIFEST

    path = layout.adapter_index(results_dir)
    if not path.exists():
        return []
    rows = read_csv(path)
    for i, r in enumerate(rows, 2):
        if "adapter_dir" not in r:
            raise ValueError(f"{path}: no adapter_dir column; re-run notebook 03 to rewrite the index")
        folder = layout.from_relative(results_dir, r["adapter_dir"])
        r["adapter_dir"] = str(folder)
        if not (folder / MANIFEST).exists():
            raise FileNotFoundError(f"{path}, line {i}: {r['adapter_dir']} holds no finished adapter "
                                    f"({MANIFEST}); re-run notebook 03 for {r.get('model')} / {r.get('task')}")
    return rows


def collect_train_loss(index_rows: Sequence[Mapping[str, Any]]) -> Any:
    """The per-step training losses of every adapter as one table (``layout.train_loss_csv``)."""
    import pandas as pd

    frames = []
    for r in index_rows:
        log_rows = read_train_log(r["adapter_dir"])
        if log_rows:
            df = pd.DataFrame(log_rows)[["step", "epoch", "loss", "tokens"]]
            frames.append(df.assign(model=r["model"], task=r["task"], variant=r["variant"]))
    cols = ["model", "task", "variant", "step", "epoch", "loss", "tokens"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols].sort_values(["model", "task", "variant", "step"],
                                                                  ignore_index=True)
