"""Memory hygiene between training runs, proven without a card.

On a GPU the second adapter's auto micro-batch reads free memory with ``torch.cuda.mem_get_info``: the
previous run's cached blocks and bitsandbytes' paged optimizer buffers (kept alive in the process-wide
``GlobalPageManager.paged_tensors``) must be given back first, or the micro-batch shrinks run after run.
"""
import weakref

import pytest
import torch
from finetune_tiny import CORPUS, make_tiny_llama

from kinject_utils import finetune as ft
from kinject_utils.finetune import loop, memory


class FakePages:
    """Stands in for bitsandbytes' GlobalPageManager: a process-wide list of paged buffers."""

    def __init__(self):
        self.paged_tensors = []


def test_release_memory_drops_the_optimizers_paged_buffers_only(monkeypatch):
    pages = FakePages()
    monkeypatch.setattr(memory, "_page_manager", lambda: pages)
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones(4)
    opt.step()
    mine = list(opt.state[p].values())
    other = torch.zeros(3)  # another live optimizer's buffer
    pages.paged_tensors += [t for t in mine if isinstance(t, torch.Tensor)] + [other]
    assert memory.release_memory(opt) == sum(isinstance(t, torch.Tensor) for t in mine)
    assert pages.paged_tensors == [other] and not opt.state


def test_free_memory_is_read_after_the_cache_is_emptied(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: calls.append("mem_get_info") or (8 << 30, 16 << 30))
    assert memory.cuda_free_gib("cuda") == 8.0
    assert calls == ["empty_cache", "mem_get_info"]


@pytest.mark.slow
def test_a_finished_run_leaves_no_optimizer_state_alive(tmp_path, monkeypatch):
    """Two runs in one process, as notebook 03 trains ~45 adapters in one kernel: after each, the
    optimizer's buffers are unreachable (weakrefs dead) and none is left in the page manager."""
    pages = FakePages()
    monkeypatch.setattr(memory, "_page_manager", lambda: pages)
    refs: list[weakref.ref] = []
    real = loop._make_optimizer

    def paged_like(params, cfg, device):  # register state buffers as bitsandbytes' paged optimizer does
        opt = real(params, cfg, device)
        for p in params:
            opt.state[p] = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p),
                            "step": torch.tensor(0.0)}
            pages.paged_tensors += [opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]]
            refs.append(weakref.ref(opt.state[p]["exp_avg"]))
        refs.append(weakref.ref(opt))
        return opt

    monkeypatch.setattr(loop, "_make_optimizer", paged_like)
    tiny = make_tiny_llama(tmp_path / "model")
    cfg = ft.FinetuneConfig(micro_batch=2, grad_accum=1, budget="steps", max_steps=2, device="cpu", dtype="float32")
    for name in ("first", "second"):
        ft.train_adapter(str(tiny), CORPUS, cfg, tmp_path / name, progress=False)
        assert pages.paged_tensors == [], f"{name}: paged buffers still registered"
        assert all(r() is None for r in refs), f"{name}: optimizer state still reachable"


def test_qlora_on_a_bf16_card_trains_under_bf16_autocast_with_tf32_restored_after(monkeypatch):
    from kinject_utils import device as device_mod

    monkeypatch.setattr(device_mod, "native_bf16", lambda: True)
    before = torch.backends.cuda.matmul.allow_tf32
    with loop.compute_precision("qlora", "cuda") as used:
        assert used == "bf16 autocast + tf32" and torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
    for method, dev in (("lora", "cuda"), ("qlora", "cpu")):
        with loop.compute_precision(method, dev) as used:
            assert used == "native"
    monkeypatch.setattr(device_mod, "native_bf16", lambda: False)  # T4/V100: no bf16 autocast
    with loop.compute_precision("qlora", "cuda") as used:
        assert used == "native"


@pytest.mark.slow
def test_every_training_forward_runs_in_the_compute_precision(tmp_path, monkeypatch):
    import contextlib
    import json

    entered = []

    @contextlib.contextmanager
    def recording(method, device):
        entered.append((method, device))
        yield "recorded"

    monkeypatch.setattr(loop, "compute_precision", recording)
    cfg = ft.FinetuneConfig(micro_batch=2, grad_accum=2, budget="steps", max_steps=2, device="cpu", dtype="float32")
    ft.train_adapter(str(make_tiny_llama(tmp_path / "model")), CORPUS, cfg, tmp_path / "a", progress=False)
    assert entered == [("lora", "cpu")] * 4  # 2 steps x 2 micro-batches
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["compute"] == "recorded"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapters_swapped_on_one_base_score_as_fresh_loads(tmp_path, method):
    """AdapterSwitch (one base, adapters swapped) gives the numbers of a fresh load_finetuned per adapter,
    and the plain base again after adapters were on it."""
    from kinject_utils.scoring import score_questions
    from kinject_utils.tasks import Question

    tiny = str(make_tiny_llama(tmp_path / "model"))
    quant = "nf4" if method == "qlora" else None
    dt = "bfloat16" if method == "qlora" else "float32"
    cfg = ft.FinetuneConfig(method=method, micro_batch=2, grad_accum=1, budget="steps", max_steps=3, device="cpu",
                            dtype=dt, lr=1e-2)
    dirs = []
    for i in (1, 2):
        ft.train_adapter(tiny, CORPUS[i:], cfg.replace(seed=i), tmp_path / f"a{i}", progress=False)
        dirs.append(tmp_path / f"a{i}")
    qs = [Question(id=f"q{i}", question=CORPUS[i][:40], choices=["the ferry", "the mayor", "a sensor", "engineers"],
                   answer=i % 4) for i in range(4)]

    def scores(model, tok):
        return [r["logliks"] for r in score_questions(model, tok, qs, progress=False, max_length=256)]

    from kinject_utils.models import load_causal_lm

    fresh = {None: scores(*load_causal_lm(tiny, dtype=dt, quantization=quant))}
    for d in dirs:
        fresh[d] = scores(*ft.load_finetuned(tiny, d, device="cpu", dtype=dt, quantization=quant or "none"))
    assert fresh[dirs[0]] != fresh[dirs[1]] != fresh[None]  # the adapters do change the numbers
    switch = ft.AdapterSwitch(device="cpu", dtype=dt)
    for d in [None, dirs[0], dirs[1], None, dirs[0]]:
        assert scores(*switch.load(tiny, d, quantization=quant)) == fresh[d], d


# ------------------------------------------------------------------ the cell meter (notebook 05, gpu_check)
def _touch(mib):
    """``mib`` MiB of fresh resident memory: an anonymous mmap with every page written (a bytearray may reuse
    pages the process already holds, and then the resident size does not grow)."""
    import mmap

    block = mmap.mmap(-1, mib * 2**20)
    for off in range(0, mib * 2**20, mmap.PAGESIZE):
        block[off] = 1
    return block


def _rss_mb():
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
def test_cell_meter_on_a_cpu_reports_the_process_peak_so_far():
    import time

    from kinject_utils.study import CellMeter

    m = CellMeter("cpu")
    m.start()
    block = _touch(64)
    held = _rss_mb()  # resident while the cell held its 64 MiB
    time.sleep(0.05)
    block.close()
    during = m.stop()  # stopped after the block was given back: a peak, not the resident size now
    assert during["wall_s"] >= 0.05 and during["mem_source"].startswith("ru_maxrss")
    assert during["peak_mem_mb"] >= held - 1  # MiB, not KiB or bytes; 1 MiB: the two reads' rounding
    m.start()
    later = m.stop()  # a small cell after it reports the process's peak so far, never less
    assert later["peak_mem_mb"] >= during["peak_mem_mb"] and later["wall_s"] < during["wall_s"]


def test_cell_meter_on_cuda_resets_at_start_and_reads_the_allocator_peak_of_its_device(monkeypatch):
    from kinject_utils.study import costs

    calls = []
    monkeypatch.setattr(costs, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(("sync", d)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(("reset", d)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: calls.append(("peak", d)) or 3 * 2**30)
    m = costs.CellMeter("cuda:1")
    m.start()
    assert calls == [("sync", "cuda:1"), ("reset", "cuda:1")]
    out = m.stop()
    assert calls[2:] == [("sync", "cuda:1"), ("peak", "cuda:1")]
    assert out["peak_mem_mb"] == 3072.0 and out["mem_source"].startswith("cuda")
    assert not costs.CellMeter("cpu").cuda  # a CPU run never touches the CUDA counters
