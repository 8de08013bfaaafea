"""kinject_utils: the package behind the kinject notebooks (Ovadia et al. 2023, FT vs RAG).

One module per pipeline stage:

    io          atomic file writes, JSONL helpers, content hashes, project paths
    models      model registry, embedded offline models, 4-bit loading with the bitsandbytes CPU fix
    tasks       the task format shared by every stage (questions, knowledge base)
    data        MMLU, the fictional current-events generator, fictional knowledge, bring-your-own (01)
    paraphrase  paraphrase backends and their cache (02)
    finetune    256-token chunking, (Q)LoRA continued pre-training, the paraphrase sweep (03)
    retrieval   embeddings, FAISS, recall@K, context assembly (04)
    scoring     lm-eval-identical log-likelihood scoring and statistics (05)
    study       the method grid and the claims check (05, 06)
    plots       figures and tables beside the paper's (06)
    runner      executes the numbered notebooks in order with papermill
"""
__version__ = "0.1.0"
