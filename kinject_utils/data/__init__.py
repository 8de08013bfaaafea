"""The question sets Q and knowledge bases B_Q the study injects (notebook 01).

Four sources, one format (:mod:`kinject_utils.tasks`), one module each:

    source               where MMLU, fictional knowledge and EntityQuestions (notebook 07) come from: a folder,
                         KINJECT_DATA, the cache, else a checked download (the hub; EntityQuestions: GitHub)
    mmlu                 the paper's five MMLU subjects, from the original CSVs or the hub's parquet (``cais/mmlu``)
    news_*               fictional_news: a seeded generator of news from 2031 (the stand-in for the
                         paper's unreleased current-events set): knowledge no model can have, with
                         rewordings for FT-par (news_templates: word lists; news_world: entities,
                         events, wordings; news_questions: questions and the task)
    fictional_knowledge  the 130 invented passages of Chang et al. (2024), cloze probes turned into fair
                         4-option questions
    custom               bring your own: the one folder-of-documents reader and a questions file
    wikipedia            a Wikipedia knowledge base for MMLU (online users; the paper's KB was never released)
    build                notebook 01's entry points (build_tasks, task_summary)

Chunking into 256-token training blocks lives in :mod:`kinject_utils.finetune`.

Example:
    >>> task = make_fictional_news("tiny", seed=0)
    >>> len(task.docs), len(task.questions)
    (8, 16)
"""
from __future__ import annotations

from .build import TASK_NAMES, build_tasks, task_summary
from .custom import (
                                  DOC_SUFFIXES,
                                  LARGE_DOC_CHARS,
                                  load_custom_task,
                                  load_documents,
                                  load_questions,
)
from .errors import DataUnavailableError, WikipediaUnavailableError
from .fictional_knowledge import (
                                  FK_DEFAULT_JUDGE,
                                  FK_DEFAULT_MAX_QUESTIONS,
                                  FK_KINDS,
                                  answer_kind,
                                  load_fictional_knowledge,
                                  probe_kind_counts,
                                  question_only_accuracy,
)
from .mmlu import LETTERS, MMLU_SUBJECTS, build_mmlu_task, load_mmlu
from .news_questions import NewsWorld, generate_news_world, make_fictional_news
from .news_world import FICTIONAL_SIZES, NewsEvent, NewsSize
from .source import DATA_ENV, EQ_RELATIONS, DataSource, describe_source, resolve_dataset
from .wikipedia import MMLU_WIKI_TOPICS, clean_wiki_text, fetch_wikipedia_kb

__all__ = [
                                  "DATA_ENV",
                                  "DOC_SUFFIXES",
                                  "EQ_RELATIONS",
                                  "FICTIONAL_SIZES",
                                  "FK_DEFAULT_JUDGE",
                                  "FK_DEFAULT_MAX_QUESTIONS",
                                  "FK_KINDS",
                                  "LARGE_DOC_CHARS",
                                  "LETTERS",
                                  "MMLU_SUBJECTS",
                                  "MMLU_WIKI_TOPICS",
                                  "TASK_NAMES",
                                  "DataSource",
                                  "DataUnavailableError",
                                  "NewsEvent",
                                  "NewsSize",
                                  "NewsWorld",
                                  "WikipediaUnavailableError",
                                  "answer_kind",
                                  "build_mmlu_task",
                                  "build_tasks",
                                  "clean_wiki_text",
                                  "describe_source",
                                  "fetch_wikipedia_kb",
                                  "generate_news_world",
                                  "load_custom_task",
                                  "load_documents",
                                  "load_fictional_knowledge",
                                  "load_mmlu",
                                  "load_questions",
                                  "make_fictional_news",
                                  "probe_kind_counts",
                                  "question_only_accuracy",
                                  "resolve_dataset",
                                  "task_summary",
]
