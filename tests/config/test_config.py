"""Config schema: defaults, readable errors (file + dotted key), overrides, dump/load round trip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dlrun.config import (
    ExperimentConfig,
    apply_overrides,
    config_hash,
    config_to_dict,
    dump_config,
    load_config,
    parse_override,
    validate_config,
    with_overrides,
)
from dlrun.errors import ConfigError

MINIMAL = """
data:
  name: blobs
model:
  type: mlp
  hidden: [32, 16]
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides or [])
    return str(info.value).splitlines()


def test_minimal_config_takes_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert isinstance(cfg, ExperimentConfig)
    assert (cfg.name, cfg.seed, cfg.mode, cfg.device, cfg.dtype) == (
        "experiment", 0, "static", "cpu", "float32")
    assert cfg.data.name == "blobs" and cfg.data.val_fraction == 0.1 and cfg.data.options == {}
    assert cfg.model.type == "mlp" and cfg.model.hidden == [32, 16]
    assert cfg.model.model_dump(exclude_unset=True) == {"type": "mlp", "hidden": [32, 16]}
    assert (cfg.model.activation, cfg.model.dropout) == ("relu", 0.0)  # the family's defaults
    assert cfg.loss.name is None and cfg.loss.label_smoothing == 0.0
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == 1e-3
    assert cfg.optimizer.betas == (0.9, 0.999)
    assert cfg.schedule.name == "constant" and cfg.schedule.interval == "epoch"
    assert cfg.train.epochs == 1 and cfg.train.batch_size == 64 and cfg.train.max_steps is None
    assert cfg.train.early_stopping is None and cfg.train.drop_last and cfg.train.shuffle
    assert cfg.logging.dir == "runs" and cfg.logging.log_every == 50 and cfg.logging.plots


def test_config_and_its_sections_are_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(Exception):  # noqa: B017  (pydantic's frozen-instance error)
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(Exception):  # noqa: B017
        cfg.model.hidden = [1]  # type: ignore[misc]


def test_full_config_and_shorthands(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
        name: full
        seed: 7
        mode: eager
        device: CUDA:1
        dtype: float64
        data: {name: Fashion-MNIST, root: /data, val_fraction: 0.2, options: {flatten: false}}
        model: {type: cnn, channels: [8, 16]}
        loss: cross_entropy
        optimizer: {name: sgd, lr: 1e-2, momentum: 0.9, nesterov: true}
        schedule: {name: multistep, milestones: [2, 4]}
        train:
          epochs: 3
          early_stopping: true
          grad_clip_norm: 1
        logging:
    """))
    assert cfg.device == "cuda:1" and cfg.data.name == "fashion_mnist"
    assert cfg.loss.name == "cross_entropy"
    assert cfg.optimizer.lr == pytest.approx(0.01)  # YAML reads 1e-2 as a string
    assert cfg.train.early_stopping is not None and cfg.train.early_stopping.patience == 5
    assert cfg.train.grad_clip_norm == 1.0 and cfg.logging.dir == "runs"


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    lines = errors_of(write(tmp_path, MINIMAL + "train:\n  batchsize: 32\n"))
    assert lines == ["config.yaml: train.batchsize: unknown key; did you mean 'batch_size'?"
                     .replace("config.yaml", str(tmp_path / "config.yaml"))]


def test_unknown_top_level_section_and_misplaced_key(tmp_path: Path) -> None:
    lines = errors_of(write(tmp_path, MINIMAL + "optimiser: {lr: 0.1}\nlr: 0.1\n"))
    assert any("optimiser: unknown key; did you mean 'optimizer'?" in ln for ln in lines)
    assert any(": lr: unknown key; did you mean 'optimizer.lr'?" in ln for ln in lines)


def test_wrong_type(tmp_path: Path) -> None:
    (line,) = errors_of(write(tmp_path, MINIMAL + "train: {batch_size: many}\n"))
    assert line.endswith("config.yaml: train.batch_size: expected an integer, got 'many'")


def test_bool_is_not_a_number(tmp_path: Path) -> None:
    (line,) = errors_of(write(tmp_path, MINIMAL + "seed: true\n"))
    assert line.endswith(": seed: expected an integer, got true")


def test_impossible_value(tmp_path: Path) -> None:
    (line,) = errors_of(write(tmp_path, MINIMAL + "optimizer: {lr: -1}\n"))
    assert line == f"{tmp_path / 'config.yaml'}: optimizer.lr: expected a number > 0, got -1"


def test_interval_bounds_and_integers(tmp_path: Path) -> None:
    lines = errors_of(write(tmp_path, """
        data: {name: blobs, val_fraction: 1}
        model: {type: mlp}
        train: {epochs: 0, max_steps: 2.5}
        optimizer: {lr: .inf}
    """))
    text = "\n".join(lines)
    assert "data.val_fraction: expected a number in [0, 1), got 1" in text
    assert "train.epochs: expected an integer >= 1, got 0" in text
    assert "train.max_steps: expected an integer, got 2.5" in text
    assert "optimizer.lr: expected a finite number, got inf" in text


def test_bad_enum_with_suggestion(tmp_path: Path) -> None:
    (line,) = errors_of(write(tmp_path, MINIMAL + "optimizer: {name: adma}\n"))
    assert line.endswith(
        "optimizer.name: expected one of 'adam', 'adamw', 'rmsprop', 'sgd', got 'adma'; "
        "did you mean 'adam'?"
    )


def test_bad_device(tmp_path: Path) -> None:
    (line,) = errors_of(write(tmp_path, MINIMAL + "device: gpu\n"))
    assert line.endswith("device: expected cpu, cuda, cuda:N or auto, got 'gpu'")


def test_unknown_dataset(tmp_path: Path) -> None:
    (line,) = errors_of(write(tmp_path, "data: {name: mnsit}\nmodel: {type: mlp}\n"))
    assert ": data.name: unknown dataset 'mnsit'; did you mean 'mnist'?" in line
    assert "available:" in line and "fashion_mnist" in line


def test_unknown_data_option_lists_the_options(tmp_path: Path) -> None:
    lines = errors_of(write(tmp_path, """
        data: {name: blobs, options: {n_clases: 3, val_fraction: 0.3}}
        model: {type: mlp}
    """))
    assert len(lines) == 2
    assert "data.options.n_clases: dataset 'blobs' has no option 'n_clases'; " \
           "did you mean 'n_classes'?" in lines[0]
    assert "options: n, n_classes, n_features" in lines[0]
    assert "data.options.val_fraction: set it as data.val_fraction" in lines[1]


def test_root_for_a_dataset_without_files(tmp_path: Path) -> None:
    (line,) = errors_of(write(tmp_path, "data: {name: blobs, root: /x}\nmodel: {type: mlp}\n"))
    assert "data.root: dataset 'blobs' reads no files" in line


def test_missing_required(tmp_path: Path) -> None:
    lines = errors_of(write(tmp_path, "name: x\ndata: {}\n"))
    assert any(ln.endswith("data.name: missing (required)") for ln in lines)
    assert any(ln.endswith("model: missing (required)") for ln in lines)


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  name: blobs\n  options: {n: 3\nmodel: {type: mlp}\n")
    (line,) = errors_of(path)
    assert line.startswith(f"{path}:4:")
    assert "invalid YAML" in line and "line 3" in line


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    (line,) = errors_of(write(tmp_path, MINIMAL + "seed: 1\nseed: 2\n"))
    assert "duplicate key 'seed'" in line and "config.yaml:8:1:" in line


def test_missing_file_and_bad_top_level(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="empty config"):
        load_config(write(tmp_path, "", "empty.yaml"))
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping .* got a list"):
        load_config(write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_many_errors_at_once(tmp_path: Path) -> None:
    lines = errors_of(write(tmp_path, """
        mode: eagr
        data: {name: blobs, val_fraction: -0.1}
        model: {type: transformer}
        optimizer: {lr: 0, momentun: 0.9}
        train: {batch_size: 0, early_stopping: {patience: 0}}
        logging: {log_every: x}
    """))
    keys = [ln.split(": ")[1] for ln in lines]
    assert keys == ["mode", "data.val_fraction", "model.type", "optimizer.lr",
                    "optimizer.momentun", "train.batch_size", "train.early_stopping.patience",
                    "logging.log_every"]
    assert all(ln.startswith(str(tmp_path / "config.yaml") + ": ") for ln in lines)


def test_cross_field_checks(tmp_path: Path) -> None:
    (line,) = errors_of(write(tmp_path, MINIMAL + "schedule: {name: multistep}\n"))
    assert "schedule.milestones: the multistep schedule needs at least one milestone" in line
    (line,) = errors_of(write(tmp_path, MINIMAL + "schedule: {milestones: [3, 2]}\n"))
    assert "schedule.milestones: expected increasing integers" in line
    (line,) = errors_of(write(tmp_path, MINIMAL + "optimizer: {name: sgd, nesterov: true}\n"))
    assert "optimizer.nesterov: needs momentum > 0" in line
    (line,) = errors_of(write(tmp_path, MINIMAL + "optimizer: {betas: [0.9]}\n"))
    assert line.endswith("optimizer.betas: expected a list of 2 items, got [0.9]")
    (line,) = errors_of(write(tmp_path, MINIMAL + "optimizer: {betas: [0.9, 0.9, 0.9]}\n"))
    assert line.endswith("optimizer.betas: expected a list of 2 items, got [0.9, 0.9, 0.9]")


def test_overrides_nested_lists_and_null(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "train: {early_stopping: {patience: 2}}\nloss: mse\n")
    cfg = load_config(path, [
        "optimizer.lr=0.1", "model.hidden=[256,128]", "train.early_stopping=null",
        "mode=eager", "seed=3", "data.options.n=50", "loss.label_smoothing=0.1",
    ])
    assert cfg.optimizer.lr == 0.1 and cfg.model.hidden == [256, 128]
    assert cfg.train.early_stopping is None and cfg.mode == "eager" and cfg.seed == 3
    assert cfg.data.options == {"n": 50}
    assert cfg.loss.name == "mse" and cfg.loss.label_smoothing == 0.1


def test_override_new_key_names_the_override(tmp_path: Path) -> None:
    lines = errors_of(write(tmp_path, MINIMAL), ["train.batchsize=3", "optimizer.lr=-2"])
    assert lines == [
        "--set optimizer.lr=-2: optimizer.lr: expected a number > 0, got -2",
        "--set train.batchsize=3: train.batchsize: unknown key; did you mean 'batch_size'?",
    ]


def test_every_bad_override_and_the_files_errors_in_one_report(tmp_path: Path) -> None:
    """Bad keys, bad values, malformed and inapplicable overrides and the file's own problems:
    one ConfigError, a line each, every unknown name with its did-you-mean."""
    path = write(tmp_path, MINIMAL + "optimizer: {lr: -1}\ntrian: {}\n")
    lines = errors_of(path, ["optimizer.lrr=0.1", "model.hiden=3", "optimizer.name=adamm",
                             "foo", "model.type.x=1", "train.batch_size=abc"])
    assert lines[:2] == [
        "--set foo: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.01",
        "--set model.type.x=1: model.type is 'mlp', not a section with keys"]
    (name,) = [line for line in lines if line.startswith("--set optimizer.name=")]
    assert name.endswith("got 'adamm'; did you mean 'adam'?")
    assert sorted(set(lines[2:]) - {name}) == sorted([
        "--set optimizer.lrr=0.1: optimizer.lrr: unknown key; did you mean 'lr'?",
        "--set model.hiden=3: model.hiden: unknown key; did you mean 'hidden'?",
        "--set train.batch_size=abc: train.batch_size: expected an integer, got 'abc'",
        f"{path}: optimizer.lr: expected a number > 0, got -1",
        f"{path}: trian: unknown key; did you mean 'train'?"])


def test_unknown_model_keys_are_config_errors_of_the_family(tmp_path: Path) -> None:
    lines = errors_of(write(tmp_path, MINIMAL + "  n_layer: 2\n  zzz: 1\n"))
    assert lines[0].endswith("model.n_layer: unknown key; expected one of: type, hidden, "
                             "activation, dropout")
    gpt = "data: {name: blobs}\nmodel: {type: gpt, n_layr: 2}\n"
    assert errors_of(write(tmp_path, gpt))[0].endswith(
        "model.n_layr: unknown key; did you mean 'n_layer'?")
    rnn = "data: {name: blobs}\nmodel: {type: rnn, nonlinearity: tanh}\n"
    assert load_config(write(tmp_path, rnn)).model.nonlinearity == "tanh"


@pytest.mark.parametrize("override", ["foo", "=1", "a..b=1", "train.epochs=[1,", "1a=2"])
def test_malformed_override(override: str) -> None:
    with pytest.raises(ConfigError, match=r"^--set "):
        apply_overrides({}, [override])


def test_override_through_a_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match="seed is 0, not a section"):
        apply_overrides({"seed": 0}, ["seed.x=1"])


def test_apply_overrides_does_not_mutate_its_input() -> None:
    data = {"train": {"epochs": 1}}
    out = apply_overrides(data, ["train.epochs=2", "logging.dir=out"])
    assert data == {"train": {"epochs": 1}}
    assert out == {"train": {"epochs": 2}, "logging": {"dir": "out"}}
    assert parse_override("a.b= [1, 2]") == (("a", "b"), [1, 2])
    assert parse_override("a=") == (("a",), None)


def test_dump_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), [
        "train.early_stopping={metric: val_acc, mode: max}", "optimizer.betas=[0.8, 0.99]",
        "schedule.name=cosine", "optimizer.eps=1e-7", "loss=mse",
    ])
    out = dump_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(out)
    assert again == cfg
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(cfg) != config_hash(with_overrides(cfg, ["seed=1"]))
    assert config_hash(cfg, exclude=["logging"]) == config_hash(
        with_overrides(cfg, ["logging.dir=elsewhere"]), exclude=["logging"])
    assert not list((tmp_path / "run").glob(".*"))


def test_validate_config_from_python() -> None:
    cfg = validate_config({"data": {"name": "linear"}, "model": {"type": "linear"}})
    assert cfg.data.name == "linear"
    with pytest.raises(ConfigError, match=r"^config: model\.type: expected one of"):
        validate_config({"data": {"name": "linear"}, "model": {"type": "tree"}})


def test_non_string_keys() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({1: "x", "data": {"name": "linear", "options": {2: 3}},
                         "model": {"type": "linear"}})
    assert str(info.value).splitlines() == [
        "config: data.options[2]: keys must be strings, got 2",
        "config: 1: keys must be strings, got 1",
    ]


def test_dataset_taking_any_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from dlrun.data import datasets

    def flexible(val_fraction: float = 0.1, **kwargs: object) -> None:
        raise AssertionError("never built by the config")

    monkeypatch.setattr(datasets, "DATASETS", datasets.DATASETS.copy())
    datasets.register_dataset("flexible", flexible)
    cfg = validate_config({"data": {"name": "flexible", "options": {"anything": 1}},
                           "model": {"type": "linear"}})
    assert cfg.data.options == {"anything": 1}


def test_nanogpt_keys(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
        data: {name: text, options: {path: input.txt, seq_len: 64, stride: 1}}
        model: {type: lstm}
        optimizer: {name: adamw, weight_decay: 0.1, decay: matrices}
        schedule: {name: cosine, warmup_steps: 100, min_lr: 1e-4, decay_steps: 2000,
                   interval: step}
        train: {max_steps: 2000, batch_size: 12, sampling: random}
    """))
    assert cfg.data.options == {"path": "input.txt", "seq_len": 64, "stride": 1}
    assert cfg.optimizer.decay == "matrices" and cfg.train.sampling == "random"
    assert (cfg.schedule.min_lr, cfg.schedule.decay_steps) == (1e-4, 2000)
    alias = load_config(write(tmp_path, MINIMAL + "schedule: {name: cosine, eta_min: 0.01}\n"))
    assert alias.schedule.min_lr == 0.01  # PyTorch's name for the same floor
    assert load_config(dump_config(cfg, tmp_path / "resolved.yaml")) == cfg
    defaults = load_config(write(tmp_path, MINIMAL))
    assert (defaults.optimizer.decay, defaults.train.sampling) == ("all", "permutation")
    assert (defaults.schedule.min_lr, defaults.schedule.decay_steps) == (0.0, None)


def test_nanogpt_keys_errors_name_the_key(tmp_path: Path) -> None:
    lines = errors_of(write(tmp_path, """
        data: {name: text, options: {path: a.txt, strid: 1}}
        model: {type: lstm}
        optimizer: {decay: matrix, lr_decay_iters: 5}
        schedule: {name: cosine, eta_min: -1, decay_step: 9}
        train: {sampling: randm}
    """))
    text = "\n".join(lines)
    assert "data.options.strid: dataset 'text' has no option 'strid'; did you mean 'stride'?" \
        in text
    assert "optimizer.decay: expected one of 'all', 'matrices', got 'matrix'; did you mean " \
           "'matrices'?" in text
    assert "optimizer.lr_decay_iters: unknown key" in text
    assert "schedule.eta_min: expected a number >= 0, got -1" in text
    assert "schedule.decay_step: unknown key; did you mean 'decay_steps'?" in text
    assert "train.sampling: expected one of 'permutation', 'random', got 'randm'; did you " \
           "mean 'random'?" in text


@pytest.mark.parametrize("extra, message", [
    ("schedule: {min_lr: 0.1, eta_min: 0.1}",
     "schedule.eta_min: is another name for min_lr; give one of them"),
    ("schedule: {t_max: 10, decay_steps: 20}", "schedule.decay_steps: give decay_steps"),
    ("schedule: {warmup_steps: 100, decay_steps: 100}",
     "schedule.decay_steps: must be greater than warmup_steps (100), got 100"),
    ("train: {sampling: random, shuffle: false}",
     "train.shuffle: false contradicts sampling: random"),
])
def test_nanogpt_cross_field_checks(tmp_path: Path, extra: str, message: str) -> None:
    (line,) = errors_of(write(tmp_path, MINIMAL + extra + "\n"))
    assert message in line


def test_model_keys_are_checked_with_the_rest_of_the_file(tmp_path: Path) -> None:
    """The family's section is part of the schema: its errors come in the same report."""
    text = ("data: {name: blobs}\nmodel: {type: cnn, chanels: [4], dropout: 1.5, pool: 0}\n"
            "optimizer: {name: sgd, momentum: -1}\n")
    lines = errors_of(write(tmp_path, text))
    assert [line.split(": ", 2)[1] for line in lines] == [
        "model.pool", "model.dropout", "model.chanels", "optimizer.momentum"]
    assert "did you mean 'channels'?" in lines[2]
