"""The study: the method grid of notebook 05, its result files, costs, and the claims check of 06.

One concern per module:

    paper    the paper's Tables 1 and 2, its five claims, the metric rule (cloze -> acc_norm, letter -> acc)
    grid     ScoreSpec, GridConfig, plan_grid, run_grid (resumable, per-cell cache)
    collect  05_scores.csv, 05_per_question.jsonl, 05_costs.csv from the cache
    costs    per-cell wall time, peak memory, scored tokens; training and index costs; per-method table
    claims   the five claims declared (PAPER_CLAIMS), decided by kinject_utils.claims; 06_claims.md
    learned  memorisation (notebook 03) beside question accuracy (05), per adapter
    chance   the base model per question kind beside chance (is a fictional task fair?)
    run      score_study: notebook 05 in one call on one device and dtype

    path = score_study("results", ["smollm2-135m"], ["fictional_news"], GridConfig(), device="auto")
"""
from .chance import CHANCE_COLUMNS, base_by_kind
from .claims import PAPER_CLAIMS, PaperClaim, check_claims, claims_markdown
from .collect import PER_QUESTION_KEYS, SCORE_COLUMNS, collect_scores
from .costs import COST_COLUMNS, CellMeter, cost_by_method, scored_tokens, write_costs
from .grid import GridConfig, ScoreSpec, plan_grid, run_grid, subset
from .learned import LEARNED_COLUMNS, LEARNED_SHARE, baseline_check, memorisation_vs_accuracy
from .paper import CLAIMS, METHODS, PAPER_TABLE1, PAPER_TABLE2, metric_for
from .run import load_tasks, score_study

__all__ = ["ScoreSpec", "GridConfig", "PAPER_TABLE1", "PAPER_TABLE2", "CLAIMS", "METHODS", "plan_grid",
           "run_grid", "collect_scores", "check_claims", "claims_markdown", "PaperClaim", "PAPER_CLAIMS",
           "SCORE_COLUMNS", "PER_QUESTION_KEYS", "COST_COLUMNS",
           "CellMeter", "cost_by_method", "scored_tokens", "write_costs", "metric_for", "subset", "load_tasks",
           "score_study", "LEARNED_COLUMNS", "LEARNED_SHARE", "baseline_check", "memorisation_vs_accuracy",
           "CHANCE_COLUMNS", "base_by_kind"]
