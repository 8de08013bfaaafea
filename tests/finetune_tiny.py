"""A tiny random Llama with a byte-level BPE tokenizer, saved as safetensors (finetune tests).

Seconds to build, no hub, no shared data: it goes through the same ``load_causal_lm`` path
(including 4-bit ``bnb.nn.Linear4bit`` layers) as the real models.
"""
from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The Varnholt ferry opened on the third of May, carrying 1,200 passengers a day.",
    "Mayor Ilsa Brenn said the new tidal station would power 4,000 homes by winter.",
    "Engineers at Quorvale finished the light-rail line four months late.",
    "A soil sensor built in Tarnby sold out within a day of its launch.",
] * 3


def make_tiny_llama(folder: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Write a random ``LlamaForCausalLM`` (hidden 64, 2 layers) and its tokenizer to ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
