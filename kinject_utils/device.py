"""One device and one precision for the whole run, resolved in one place.

Every stage that loads a model (02 local paraphrasing, 03 training, memorisation and the
learning-rate search, 04 embedder, 05 base and fine-tuned scoring, 07) calls
:func:`resolve_device` and :func:`resolve_dtype` with the run's ``DEVICE`` / ``DTYPE``
parameters, so ``DEVICE: cuda`` in a config reaches every loader.

Precision on a CPU is chosen by the machine: bf16 is fast only where oneDNN can use AMX
(Intel Sapphire Rapids and later). Without AMX, bf16 LoRA training was measured 1.57x *slower*
than fp32 (AVX-512 with bf16, 2 cores: 188 vs 295 tokens/s), and without AVX-512 bf16 is
emulated and slower still. fp32 also keeps scoring within 1e-4 of lm-evaluation-harness and the
same on every CPU. So ``"auto"`` means: CUDA -> bf16 (fp32 where the card has no bf16);
CPU with AMX usable -> bf16; any other CPU -> fp32. ``KINJECT_DTYPE`` or an explicit
``DTYPE`` forces one.

    >>> resolve_dtype("float32", "cpu")
    'float32'
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from .settings import is_device_name

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still allow AMX kernels.
_AMX_ISAS = {"ALL", "DEFAULT", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX",
             "AVX10_1_512_AMX_FP16", "AVX10_2_512_AMX_2"}


class DeviceError(ValueError):
    """A device or dtype setting that cannot be honoured; the message names the fix."""


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; checks an explicit choice.

    Raises:
        DeviceError: an unknown name, or ``cuda`` asked for where torch sees no GPU.
    """
    d = str(device).strip().lower()
    if d == "auto":
        return "cuda" if cuda_available() else "cpu"
    if d == "cpu":
        return "cpu"
    if is_device_name(d):  # cuda or cuda:N
        if not cuda_available():
            raise DeviceError(f"DEVICE={device!r}, but torch sees no CUDA GPU (a CPU build of torch, or "
                              "no GPU here). Set DEVICE: cpu or auto, or install a CUDA build of torch "
                              "(environment.yml).")
        return d
    raise DeviceError(f"DEVICE={device!r} is not one of {DEVICES} (or cuda:N).")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.lru_cache(maxsize=1)
def cpu_precision_report() -> dict[str, object]:
    """What decides the CPU's precision: AMX flags, oneDNN and ATen caps (read once per process).

    Returns:
        ``{"amx": bool, "avx512_bf16": bool, "aten": str, "onednn_max_isa": str, "dtype": str,
        "why": str}``.
    """
    import torch

    flags = _cpu_flags()
    amx = {"amx_bf16", "amx_tile"} <= flags
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    aten = str(torch.backends.cpu.get_cpu_capability())
    amx_usable = amx and (not isa or isa in _AMX_ISAS) and aten.startswith("AVX512")
    if amx_usable:
        why = "AMX is present and usable by oneDNN: bf16 is the faster dtype"
    elif amx:
        why = f"AMX present but switched off (ONEDNN_MAX_CPU_ISA={isa or '-'}, ATen {aten}): fp32 is faster"
    else:
        why = f"no AMX (ATen {aten}): bf16 would be {'slower' if 'avx512_bf16' in flags else 'emulated'}; fp32"
    return {"amx": amx, "avx512_bf16": "avx512_bf16" in flags, "aten": aten, "onednn_max_isa": isa or "default",
            "dtype": "bfloat16" if amx_usable else "float32", "why": why}


def normalise_dtype(dtype: str) -> str:
    d = DTYPE_ALIASES.get(str(dtype).strip().lower(), str(dtype).strip().lower())
    if d not in DTYPES:
        raise DeviceError(f"DTYPE={dtype!r} is not one of {DTYPES} (aliases: {sorted(DTYPE_ALIASES)}).")
    return d


def resolve_dtype(dtype: str = "auto", device: str = "cpu") -> str:
    """The dtype name to load and run in: an explicit choice as given, ``"auto"`` by the machine.

    ``KINJECT_DTYPE`` (environment) overrides ``"auto"`` for every stage.
    """
    d = normalise_dtype(dtype)
    if d == "auto":
        env = os.environ.get("KINJECT_DTYPE", "").strip()
        if env:
            return resolve_dtype(env, device)
    if d != "auto":
        return d
    if str(device).startswith("cuda"):

        return "bfloat16" if native_bf16() else "float32"
    return str(cpu_precision_report()["dtype"])


def native_bf16() -> bool:
    """Whether the CUDA card computes bf16 natively (Ampere and later). Counting emulation, as
    ``torch.cuda.is_bf16_supported()`` does by default, T4 and V100 say True and run bf16 slowly."""
    import torch

    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def resolve(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """Both at once: ``(device, dtype)``."""
    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)
