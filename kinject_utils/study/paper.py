"""The paper's numbers (Tables 1 and 2), its five claims, and the one rule for the primary metric."""
from __future__ import annotations

__all__ = ["PAPER_TABLE1", "PAPER_TABLE2", "CLAIMS", "METHODS", "metric_for"]

# The Table 2 methods in the order the tables and the cost table show them.
METHODS = ["base", "base+RAG", "FT-reg", "FT-par", "FT-reg+RAG", "FT-par+RAG"]

# Table 2 of the paper: current events.
PAPER_TABLE2 = {
    "mistral-7b": {"base": .481, "base+RAG": .875, "FT-reg": .504, "FT-par": .588, "FT-reg+RAG": .810,
                   "FT-par+RAG": .830},
    "llama2-7b": {"base": .353, "base+RAG": .585, "FT-reg": .219, "FT-par": .392, "FT-reg+RAG": .326,
                  "FT-par+RAG": .520},
    "orca2-7b": {"base": .456, "base+RAG": .876, "FT-reg": .511, "FT-par": .566, "FT-reg+RAG": .820,
                 "FT-par+RAG": .826},
}
_T1_METHODS = ("base", "base+RAG", "FT-reg", "FT-reg+RAG")  # the paper's "FT" on MMLU is FT on the raw KB
_T1 = {
    (0, "mistral-7b"): {"anatomy": (.556, .681, .570, .659), "astronomy": (.625, .678, .651, .697),
                        "college_biology": (.681, .757, .701, .764), "college_chemistry": (.470, .500, .490, .500),
                        "prehistory": (.713, .750, .719, .731)},
    (0, "llama2-7b"): {"anatomy": (.393, .489, .430, .489), "astronomy": (.401, .467, .487, .520),
                       "college_biology": (.438, .493, .458, .465), "college_chemistry": (.310, .380, .390, .390),
                       "prehistory": (.448, .481, .457, .478)},
    (0, "orca2-7b"): {"anatomy": (.607, .637, .600, .637), "astronomy": (.645, .750, .651, .750),
                      "college_biology": (.583, .639, .604, .632), "college_chemistry": (.370, .440, .370, .390),
                      "prehistory": (.642, .679, .673, .673)},
    (5, "mistral-7b"): {"anatomy": (.600, .681, .622, .674), "astronomy": (.658, .724, .651, .697),
                        "college_biology": (.722, .778, .736, .771), "college_chemistry": (.470, .540, .500, .500),
                        "prehistory": (.722, .762, .725, .762)},
    (5, "llama2-7b"): {"anatomy": (.467, .563, .496, .548), "astronomy": (.401, .474, .447, .520),
                       "college_biology": (.451, .521, .424, .479), "college_chemistry": (.370, .380, .360, .390),
                       "prehistory": (.515, .531, .503, .537)},
    (5, "orca2-7b"): {"anatomy": (.570, .659, .593, .674), "astronomy": (.664, .763, .664, .743),
                      "college_biology": (.604, .660, .625, .653), "college_chemistry": (.430, .470, .370, .380),
                      "prehistory": (.664, .698, .667, .694)},
}
# PAPER_TABLE1[(shots, model)][subject][method] -> accuracy
PAPER_TABLE1 = {key: {subj: dict(zip(_T1_METHODS, vals)) for subj, vals in rows.items()} for key, rows in _T1.items()}

CLAIMS = {
    1: "RAG beats the base model everywhere",
    2: "RAG beats fine-tuning",
    3: "FT on the raw corpus barely helps (and can hurt)",
    4: "FT on paraphrases beats FT on the raw corpus, rising with the number of paraphrases",
    5: "FT+RAG is not better than RAG alone",
}


def metric_for(style: str) -> str:
    """The primary metric of a scoring style: ``acc_norm`` for cloze, ``acc`` for letter.

    The one rule the score table, the paper tables and the claims check all use.

        >>> metric_for("cloze"), metric_for("letter")
        ('acc_norm', 'acc')
    """
    if style == "cloze":
        return "acc_norm"
    if style == "letter":
        return "acc"
    raise ValueError(f"unknown scoring style {style!r}: expected 'cloze' or 'letter' (the 'style' column "
                     "of 05_scores.csv / 05_per_question.jsonl); re-run notebook 05 if the file predates it")
