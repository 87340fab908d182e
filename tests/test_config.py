import pytest

from mofusion.config import MofusionConfig, load_config_file, preset_config
from mofusion.errors import ConfigError, InputError


def test_round_trip_and_presets() -> None:
    cfg = preset_config("bandai")
    assert MofusionConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.train.batch_size == 256 and cfg.preset == "bandai"


def test_set_overrides_are_typed_and_validated() -> None:
    cfg = MofusionConfig().updated(
        assignments=["train.lr=1e-4", "diffusion.schedule=cosine", "data.subsets=['dataset-2']"]
    )
    assert cfg.train.lr == 1e-4 and cfg.diffusion.schedule == "cosine" and cfg.data.subsets == ["dataset-2"]
    for spelling, value in (("true", True), ("True", True), ("false", False)):
        cfg = MofusionConfig().updated(assignments=[f"denoiser.mask_conditioning={spelling}"])
        assert cfg.denoiser.mask_conditioning is value
    with pytest.raises(ConfigError, match="train.lr must be positive"):
        MofusionConfig().updated(assignments=["train.lr=-1"])
    with pytest.raises(ConfigError, match="unknown field 'train.nope'"):
        MofusionConfig().updated(assignments=["train.nope=1"])
    with pytest.raises(ConfigError, match="diffusion.schedule must be one of"):
        MofusionConfig().updated(assignments=["diffusion.schedule=quadratic"])
    assert (
        MofusionConfig().updated(assignments=["diffusion.prediction=sample"]).diffusion.prediction == "sample"
    )
    with pytest.raises(ConfigError, match="diffusion.prediction must be one of"):
        MofusionConfig().updated(assignments=["diffusion.prediction=v"])
    with pytest.raises(ConfigError, match="train.batch_size must be int"):
        MofusionConfig().updated(assignments=["train.batch_size=big"])
    with pytest.raises(ConfigError, match="interpolation_residual needs denoiser.mask_conditioning"):
        MofusionConfig().updated(assignments=["denoiser.interpolation_residual=true"])
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("huge")


def test_block_weights_are_a_typed_table_of_known_blocks() -> None:
    cfg = MofusionConfig().updated(assignments=["loss.block_weights={'root_height': 16, 'contacts': 0.5}"])
    assert cfg.loss.block_weights == {"root_height": 16.0, "contacts": 0.5}
    assert isinstance(cfg.loss.block_weights["root_height"], float)
    assert MofusionConfig.from_dict(cfg.to_dict()) == cfg  # saved in every checkpoint
    with pytest.raises(ConfigError, match="unknown block 'hips'"):
        MofusionConfig().updated(assignments=["loss.block_weights={'hips': 2}"])
    with pytest.raises(ConfigError, match=r"block_weights\['contacts'\] must be a number >= 0"):
        MofusionConfig().updated(assignments=["loss.block_weights={'contacts': -1}"])
    with pytest.raises(ConfigError, match="loss.block_weights must be a table"):
        MofusionConfig().updated(assignments=["loss.block_weights=[1, 2]"])


def test_config_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "run.toml"
    good.write_text("[train]\nlr = 0.001\n[denoiser]\nchannels = [32, 64]\n")
    cfg = MofusionConfig().updated(load_config_file(good))
    assert cfg.train.lr == 0.001 and cfg.denoiser.channels == [32, 64]
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(InputError, match="bad.toml: invalid config"):
        load_config_file(bad)
    typo = tmp_path / "typo.json"
    typo.write_text('{"trian": {}}')
    with pytest.raises(ConfigError, match="unknown field"):
        MofusionConfig().updated(load_config_file(typo))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"trian": {}}', "typo.json: unknown field(s) trian"),
        ('{"train": {"nope": 1}}', "typo.json: train: unknown field(s) nope"),
        ('{"train": {"lr": "fast"}}', "typo.json: train.lr must be float, got 'fast'"),
        ('{"train": {"lr": -1}}', "typo.json: train.lr must be positive"),
        ('{"train": 3}', "typo.json: train: expected a table, got int"),
    ],
)
def test_a_config_files_error_names_the_file_then_the_field(tmp_path, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    typo = tmp_path / "typo.json"
    typo.write_text(text)
    with pytest.raises(ConfigError) as caught:
        MofusionConfig().updated(load_config_file(typo), source=typo.name)
    assert str(caught.value) == message
