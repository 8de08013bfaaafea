"""Regression test for the bitsandbytes CPU trap (the 4-bit weight repack on the first eval forward).

bitsandbytes 0.50 on a CPU with avx512_bf16: the first eval-mode no-grad forward of a
``bnb.nn.Linear4bit`` repacks its weights in place for an inference-only kernel; QLoRA training
afterwards computes wrong LoRA gradients without an error. ``load_causal_lm(..., quantization="nf4")``
applies the fix (``disable_bnb_cpu_inference_repack``). The paper's flow (evaluate, fine-tune,
evaluate) walks straight into it, so this test replays that flow on a tiny random Llama with real
4-bit layers and compares the LoRA gradients with a float32 model holding the dequantized weights.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from finetune_tiny import make_tiny_llama

if TYPE_CHECKING:
    import torch

pytestmark = pytest.mark.slow


def _lora(model, seed: int = 0):
    """Wrap in LoRA (r=8, all linear layers) with *non-zero* B, so A's gradients are non-zero too."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in sorted(model.named_parameters()):
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _lora_grads(model, ids) -> torch.Tensor:
    import torch

    model.train()
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids).loss.backward()
    return torch.cat([p.grad.float().flatten() for n, p in sorted(model.named_parameters()) if "lora_" in n])


def _reference_grads(folder, qmodel, ids) -> torch.Tensor:
    """LoRA gradients of a float32 model whose linear weights are the dequantized nf4 weights."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bf
    import torch

    from kinject_utils.models import load_causal_lm

    ref, _ = load_causal_lm(str(folder), dtype="float32")
    # get_peft_model wrapped qmodel in place: its 4-bit layers now sit at "<name>.base_layer".
    qmods = {n.replace(".base_layer", ""): m for n, m in qmodel.named_modules()
             if isinstance(m, bnb.nn.Linear4bit) or "lora_" not in n}
    with torch.no_grad():
        for name, mod in ref.named_modules():
            q = qmods.get(name)
            if isinstance(mod, torch.nn.Linear) and name != "lm_head":
                assert isinstance(q, bnb.nn.Linear4bit), f"{name} is not 4-bit in the quantized model"
                mod.weight.copy_(bf.dequantize_4bit(q.weight.data, q.weight.quant_state).float())
            elif q is not None and hasattr(mod, "weight") and isinstance(mod.weight, torch.nn.Parameter) \
                    and not isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(q.weight.float())  # norms/embeddings: the bf16-rounded values
    return _lora_grads(_lora(ref), ids)


def _cosine(a, b) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def _eval_then_train_grads(folder, *, fixed: bool):
    import bitsandbytes as bnb
    import torch

    from kinject_utils.models import load_causal_lm

    qmodel, _ = load_causal_lm(str(folder), quantization="nf4")  # applies the fix
    layers = [m for m in qmodel.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.support_avx512bf16_for_cpu is False for m in layers)
    if not fixed:  # undo the fix: bitsandbytes' own default on this CPU
        from bitsandbytes.functional import has_avx512bf16

        if not has_avx512bf16():
            pytest.skip("this CPU has no avx512_bf16: the repack trap cannot occur here")
        for m in layers:
            m.support_avx512bf16_for_cpu = True
    peft_model = _lora(qmodel)
    ids = torch.randint(3, 300, (2, 48), generator=torch.Generator().manual_seed(1))
    peft_model.eval()
    with torch.no_grad():  # "evaluate the base model first", as the paper's flow does
        peft_model(input_ids=ids)
    repacked = any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    grads = _lora_grads(peft_model, ids)
    return grads, qmodel, ids, repacked


def test_qlora_gradients_match_dequantized_reference_after_an_eval_forward(tmp_path):
    folder = make_tiny_llama(tmp_path / "tiny")
    grads, qmodel, ids, repacked = _eval_then_train_grads(folder, fixed=True)
    assert not repacked, "an eval-mode forward repacked the 4-bit weights despite the fix"
    ref = _reference_grads(folder, qmodel, ids)
    cos = _cosine(grads, ref)
    assert cos > 0.999, f"4-bit LoRA gradients differ from the dequantized reference (cosine {cos:.4f})"
    assert grads.norm() > 0


def test_without_the_fix_the_trap_corrupts_gradients(tmp_path):
    """Shows the test above can fail: with bitsandbytes' default the same flow gives wrong gradients."""
    folder = make_tiny_llama(tmp_path / "tiny")
    grads, qmodel, ids, repacked = _eval_then_train_grads(folder, fixed=False)
    if not repacked:
        pytest.skip("bitsandbytes did not repack on this machine/version: the trap does not reproduce")
    ref = _reference_grads(folder, qmodel, ids)
    cos = _cosine(grads, ref)
    assert cos < 0.9, f"expected the unfixed flow to give wrong gradients, got cosine {cos:.4f}"
