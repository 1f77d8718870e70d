"""One settings schema: the experiment file's sections are the library's options, every default
written once; renamed keys say their new name; validation runs no user code and reads no files."""

import pytest
import yaml

from fhmm_ppl.classification import ClassifierOptions
from fhmm_ppl.experiment import ConfigError, ExperimentConfig, load_config, parse_config
from fhmm_ppl.experiment.prepare import prepare
from fhmm_ppl.separation.options import SeparatorOptions
from fhmm_ppl.settings import (
    CLASSIFICATION_FEATURES,
    CLASSIFICATION_MODEL,
    ClassificationSettings,
    FeatureSettings,
    InferenceSettings,
    ModelSettings,
    TrainingSettings,
)


def test_the_experiment_sections_are_the_library_settings():
    sections = {"features": FeatureSettings, "model": ModelSettings, "training": TrainingSettings,
                "inference": InferenceSettings, "classification": ClassificationSettings}
    for name, settings in sections.items():
        assert ExperimentConfig.model_fields[name].annotation is settings, name


def test_every_default_is_the_same_everywhere():
    config, separator, classifier = ExperimentConfig(), SeparatorOptions(), ClassifierOptions()
    assert config.training == separator.training == classifier.training == TrainingSettings()
    assert config.features == separator.features == FeatureSettings()
    assert config.model == separator.model == ModelSettings()
    assert config.inference == separator.inference == InferenceSettings()
    assert config.classification == classifier.classification == ClassificationSettings()
    classify = parse_config({"task": "classification"})
    assert classify.model == classifier.model == ModelSettings(**CLASSIFICATION_MODEL)
    assert classify.features == classifier.features == FeatureSettings(**CLASSIFICATION_FEATURES)
    assert (TrainingSettings().max_iter, TrainingSettings().svi_steps, FeatureSettings().hop_length) == (50, 500, 256)
    assert (classifier.features.n_fft, classifier.features.hop_length) == (512, 256)


def test_a_config_builds_the_same_options_as_python():
    from fhmm_ppl.experiment.classify import options_from

    config = parse_config({"task": "classification", "seed": 3, "model": {"n_states": 2},
                           "training": {"method": "svi", "svi_steps": 60}, "classification": {"scaler": "standard"}})
    assert options_from(config) == ClassifierOptions.from_flat(n_states=2, trainer="svi", svi_steps=60,
                                                               scaler="standard", seed=3)
    with pytest.raises(ValueError, match="^n_states: Input should be greater than or equal to 1"):
        ClassifierOptions.from_flat(n_states=0)
    with pytest.raises(ValueError, match="^unknown classifier option 'n_state'"):
        ClassifierOptions.from_flat(n_state=2)


@pytest.mark.parametrize("override, message", [
    ("inference.logmax_mask=blend", "inference.logmax_mask is now inference.soft_mask"),
    ("inference.mask=wiener", "inference.mask: wiener is now inference.mask: soft"),
])
def test_renamed_keys_name_their_new_spelling(tmp_path, override, message):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"name": "old"}))
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert str(err.value) == f"{path}: {message}"


def test_validation_runs_no_plugin_and_expands_no_glob(tmp_path):
    marker = tmp_path / "imported"
    plugin = tmp_path / "loud.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise RuntimeError('boom')\n")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"model": {"plugins": ["loud.py"]}}))
    config = load_config(path)
    assert not marker.exists()  # parsing did not execute the plug-in
    with pytest.raises(ConfigError, match=r"^x: model.plugins: plugin .*loud.py: import failed \(RuntimeError: boom\)$"):
        prepare(config, "x")
    assert marker.exists()

    files = parse_config({"data": {"source": "files", "train": {"a": [str(tmp_path / "none*.wav")], "b": ["b.wav"]},
                                   "test_clean": {"a": ["a.wav"], "b": ["b.wav"]}}})
    with pytest.raises(ConfigError, match=r"^data: no file matches '.*none\*.wav' \(train.a\)$"):
        prepare(files)
    mma = parse_config({"data": {"source": "mma", "root": str(tmp_path / "absent")}})
    with pytest.raises(ConfigError, match="^data: root '.*absent' is not a folder; download"):
        prepare(mma)


def test_a_bad_averaging_rule_is_one_line(tmp_path):
    path = tmp_path / "rule.yaml"
    path.write_text(yaml.safe_dump({"name": "rule", "inference": {"average_rule": "mean"}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: inference.average_rule: Input should be 'presence' or 'share' (got 'mean')"
    assert load_config(path, ["inference.average_rule=share"]).inference.average_rule == "share"
