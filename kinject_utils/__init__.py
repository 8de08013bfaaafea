"""kinject_utils: the package behind the kinject notebooks (Ovadia et al. 2023, FT vs RAG).

One module per pipeline stage:

    models      model registry, embedded offline models, 4-bit loading with the bitsandbytes CPU fix
    config      loading runner YAML configs
    io          atomic file writes, JSONL helpers, content hashes
    runner      executes the numbered notebooks in order with papermill
"""
__version__ = "0.1.0"
