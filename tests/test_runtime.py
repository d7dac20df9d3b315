"""Compute dtype and thread choice from the machine's capabilities (faked here: the test runs on any CPU)."""
import pytest
import torch

from openwan import runtime

AMX = {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
AVX512_BF16 = {"avx512f", "avx512_bf16"}
AVX2 = {"avx2", "fma"}


@pytest.mark.parametrize("features,expected", [(AMX, torch.bfloat16), (AVX512_BF16, torch.float32),
                                               (AVX2, torch.float32), (set(), torch.float32)])
def test_auto_dtype_follows_the_cpu(features, expected):
    dtype, why = runtime.resolve_dtype("auto", "cpu", features=features)
    assert dtype == expected and why.startswith("auto: ")
    assert runtime.resolve_dtype(None, "cpu", features=features)[0] == expected


def test_auto_dtype_reason_names_what_decided():
    assert "AMX" in runtime.resolve_dtype("auto", "cpu", features=AMX)[1]
    assert "no AMX" in runtime.resolve_dtype("auto", "cpu", features=AVX512_BF16)[1]


def test_explicit_dtypes_and_errors():
    assert runtime.resolve_dtype("bf16", "cpu", features=AVX2) == (torch.bfloat16, "as requested")
    assert runtime.resolve_dtype("fp32", "cpu", features=AMX)[0] == torch.float32
    assert runtime.resolve_dtype(torch.float16, "cpu")[0] == torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'.*auto, fp32, bf16, fp16"):
        runtime.resolve_dtype("fp8", "cpu")


def test_this_machine_is_detected_consistently():
    flags = runtime.cpu_features()
    fast, _ = runtime.fast_bf16("cpu")
    assert fast == ("amx_tile" in flags and bool({"amx_bf16", "avx512_bf16"} & flags))


def test_thread_policy(monkeypatch):
    monkeypatch.delenv("OPENWAN_THREADS", raising=False)
    demo = runtime.forward_flops(1_780_000, 320)            # the embedded demo DiT: ~1 GFLOP per forward
    big = runtime.forward_flops(1_400_000_000, 1560)         # 1.3B at 1560 tokens: ~4 TFLOP
    assert runtime.pick_threads(demo) == 1 and runtime.pick_threads(big) is None
    assert runtime.pick_threads(demo, requested=2) == 2
    monkeypatch.setenv("OPENWAN_THREADS", "3")
    assert runtime.pick_threads(demo) == 3 and runtime.pick_threads(big, requested=1) == 1
    monkeypatch.setenv("OPENWAN_THREADS", "many")
    with pytest.raises(ValueError, match="OPENWAN_THREADS must be an integer"):
        runtime.pick_threads(demo)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            runtime.pick_threads(demo, requested=bad)


def test_apply_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert runtime.apply_threads(requested=1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("features", [AMX, AVX2])
def test_auto_dtype_keeps_a_small_model_exact_on_any_cpu(monkeypatch, features):
    """dtype auto on a CPU with fast bf16 keeps a small model in fp32 - with the very weights an fp32 load gives
    (decided from the headers: read as bf16 and widened back, fp16 weights would lose 3 bits each)."""
    import openwan.runtime as rt
    from openwan.demo import DEMO_DIR
    from openwan.pipelines.components import load_components
    monkeypatch.setattr(rt, "cpu_features", lambda: frozenset(features))
    auto = load_components(DEMO_DIR, dtype="auto")
    exact = load_components(DEMO_DIR, dtype="fp32")
    assert next(auto.dit.parameters()).dtype == torch.float32
    if "amx_tile" in features:
        assert "small model" in auto.dtype_reason
    for (name, a), b in zip(auto.dit.state_dict().items(), exact.dit.state_dict().values()):
        assert torch.equal(a, b), name
