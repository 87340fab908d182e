"""The roofline bound of bench/roofline.py (which bench/profile_step.py compares a GPU profile
against): FLOPs and bytes of a traced operation, the fit over the batch, the two bounds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import roofline  # noqa: E402
from roofline import Op  # noqa: E402


def test_a_traced_convolution_has_its_hand_computed_flops_and_bytes() -> None:
    conv = torch.nn.Conv1d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 10)
    trace = roofline.OpTrace()
    with torch.no_grad(), trace:
        conv(x)
    (op,) = [o for o in trace.ops if o.kind == "matrix"]
    assert op.name == "aten.convolution"
    assert op.flops == 2 * 2 * 8 * 10 * 4 * 3  # 2 x batch x out channels x frames x in channels x kernel
    assert op.read == 4 * (2 * 4 * 10 + 8 * 4 * 3 + 8)  # input, weight, bias in float32
    assert op.written == 4 * 2 * 8 * 10


def test_views_are_not_counted_and_a_broadcast_input_is_read_once() -> None:
    x = torch.randn(3, 5)
    row = torch.randn(1, 5)
    trace = roofline.OpTrace()
    with trace:
        y = x + row.expand(3, 5)
        y.view(15)
    assert [o.name for o in trace.ops] == ["aten.add"]
    assert trace.ops[0].read == 4 * (15 + 5)
    assert trace.ops[0].kind == "other"


def test_figures_at_a_batch_are_fitted_from_batch_1_and_2() -> None:
    one = [Op("aten.convolution", "matrix", 10.0, 100.0, 8.0)]
    two = [Op("aten.convolution", "matrix", 20.0, 160.0, 16.0)]
    (op,) = roofline.at_batch(one, two, 10)
    assert (op.flops, op.read, op.written) == (100.0, 640.0, 80.0)
    with pytest.raises(RuntimeError):
        roofline.at_batch(one, [Op("aten.mm", "matrix", 1, 1, 1)], 10)


def test_the_two_bounds_by_hand() -> None:
    ops = [
        Op("aten.convolution", "matrix", 1000.0, 10.0, 10.0),  # compute-bound: 1000 / 100 = 10 s
        Op("aten.mm", "matrix", 100.0, 30.0, 10.0),  # memory-bound: 40 / 2 = 20 s
        Op("aten.native_group_norm", "norm", 0.0, 8.0, 8.0),  # alone 8 s; fused: one read, 4 s
        Op("aten.add", "other", 0.0, 6.0, 2.0),  # alone 4 s; fused: free
    ]
    b = roofline.bounds(ops, peak=100.0, bandwidth=2.0)
    assert b["matrix_flops"] == 1100.0
    assert b["each_op_alone_s"] == pytest.approx(10 + 20 + 8 + 4)
    assert b["ideal_fusion_s"] == pytest.approx(10 + 20 + 4)
    groups = roofline.by_category(ops, 100.0, 2.0)
    assert groups == {"matrix product": 20000.0, "convolution": 10000.0, "normalisation": 8000.0,
                      "elementwise, other": 4000.0}  # fmt: skip


def test_profiler_and_trace_names_fall_in_the_same_groups() -> None:
    assert (
        roofline.category("aten::cudnn_convolution") == roofline.category("aten.convolution") == "convolution"
    )
    assert roofline.category("aten::addmm") == roofline.category("aten.addmm") == "matrix product"
    assert roofline.category("aten::_efficient_attention_forward") == "attention"
    assert roofline.category("aten::native_group_norm") == "normalisation"
    assert roofline.category("aten::_to_copy") == "cast or copy"
    assert roofline.category("aten::silu") == "elementwise, other"


def test_profile_step_runs_on_the_cpu_and_splits_the_step_by_group(tmp_path, monkeypatch) -> None:
    """bench/profile_step.py is meant for a GPU run (bench/gpu.sh); on a CPU it must still run and
    write every group beside its bound, and time each convolution in both layouts."""
    import profile_step

    out = tmp_path / "profile.json"
    argv = ["profile_step.py", "--device", "cpu", "--batch", "1", "--steps", "1", "--warmup", "1",
            "--no-mdm", "--peak-tflops", "1", "--bandwidth-tbs", "0.02", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    assert profile_step.main() == 0
    result = json.loads(out.read_text())
    (row,) = result["models"].values()
    assert row["wall_ms_per_step"] > 0 and row["device_events_per_step"] is None
    assert {"convolution", "normalisation"} <= set(row["ms_per_step_by_category"])
    assert set(row["ms_per_step_by_category"]) <= set(row["bound_ms_per_step_by_category"])
    conv = result["convolutions"][0]
    assert conv["conv1d_ncl_ms"] > 0 and conv["conv2d_channels_last_ms"] > 0
    assert max(c["max_abs_difference"] for c in result["convolutions"]) < 0.1  # bf16 rounding only
    assert len(
        {(c["c_in"], c["c_out"], c["kernel"], c["stride"], c["frames"]) for c in result["convolutions"]}
    ) == len(result["convolutions"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_profile_step_on_a_gpu_counts_kernels_and_bounds_each_group(tmp_path, monkeypatch) -> None:
    """What bench/gpu.sh runs, small: the runner's buffers on the GPU, kernels counted, the bound
    from the GPU's name (datasheet bandwidth) and the peak measured there."""
    import profile_step

    out = tmp_path / "profile.json"
    argv = ["profile_step.py", "--device", "cuda", "--batch", "2", "--steps", "1", "--warmup", "1",
            "--no-mdm", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    assert profile_step.main() == 0
    result = json.loads(out.read_text())
    (row,) = result["models"].values()
    assert row["device_events_per_step"] > 50
    assert result["peak_tflops"] > 10
    if result["bandwidth_tbs"] is not None:
        assert set(row["ms_per_step_by_category"]) <= set(row["bound_ms_per_step_by_category"])


def test_the_trimmed_encoder_encodes_its_texts_as_the_whole_one_and_only_those(tmp_path) -> None:
    """bench/trim_encoder.py: the GPU machines get the encoder cut to the benchmarks' texts."""
    import trim_encoder
    from tokenizers import Tokenizer

    from mofusion.encoders import BertTextEncoder, minilm_folder

    texts = trim_encoder.BENCH_PROMPTS + trim_encoder.caption_texts()[:150]
    out = tmp_path / "minilm-trimmed"
    report = trim_encoder.trim(minilm_folder(), out, texts)  # raises if a text splits or encodes otherwise
    assert trim_encoder.KEPT_IDS < report["vocabulary"] < 1000 and report["of"] == 30522
    assert report["embeddings_checked"] == len(texts)
    whole = BertTextEncoder(minilm_folder(), "minilm")
    cut = BertTextEncoder(out, "cut")
    a, b = whole.encode(texts[:3]), cut.encode(texts[:3])
    assert (a.tokens - b.tokens).abs().max() < 0.05  # float16 weights against float32
    # words it was not cut for split into other pieces
    other = "a dragon flies over the castle"
    full_pieces = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json")).encode(other).tokens
    cut_pieces = Tokenizer.from_file(str(out / "tokenizer.json")).encode(other).tokens
    assert "dragon" in full_pieces and "dragon" not in cut_pieces


def test_ab_revisions_exports_a_revision_as_a_second_package(tmp_path: Path) -> None:
    """bench/ab_revisions.py's base: a revision's package under another name, without weights, that
    imports beside the working tree's (the package imports itself relatively)."""
    import importlib
    import subprocess

    import ab_revisions

    root = Path(__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("needs the project's git history")
    ab_revisions.extract_package("HEAD", tmp_path)
    package = tmp_path / ab_revisions.BASE_PACKAGE
    assert (package / "fast.py").is_file() and not (package / "pretrained").exists()
    assert (tmp_path / "REVISION").read_text().strip() == "HEAD"
    sys.path.insert(0, str(tmp_path))
    try:
        fast = importlib.import_module(f"{ab_revisions.BASE_PACKAGE}.fast")
        assert Path(fast.__file__).parent == package
        import mofusion.fast

        assert fast.StepRunner is not mofusion.fast.StepRunner
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith(ab_revisions.BASE_PACKAGE)]:
            del sys.modules[name]


def test_alternate_times_every_call_and_swaps_the_order() -> None:
    import ab_revisions

    order: list[str] = []
    times = ab_revisions.alternate({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # one warm-up each, then ab, ba, ab
    assert [len(t) for t in times.values()] == [3, 3] and all(s >= 0 for t in times.values() for s in t)
