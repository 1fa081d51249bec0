"""Tasks whose data come from files: the study's CSV and one string per line."""

from __future__ import annotations

import pytest

from graphprior.spec import SpecError, expand, load_spec, validate_spec
from graphprior.sweep import run_one, task_data
from reber.grammar import get_grammar
from reber.tasks import write_csv

GENERATORS = [{"name": "ring_lattice", "params": {"n": 6, "k": 2}}]


def spec(task: dict) -> dict:
    return {"generators": GENERATORS, "model": {"cells": ["gru"]}, "tasks": [task], "train": {"epochs": 1}}


@pytest.fixture
def csv_files(tmp_path):
    reber = get_grammar("reber")
    train = reber.sample(30, seed=1) + ["BTXXZE", "QQQ"] * 15
    test = reber.sample(10, seed=2) + ["BPE"] * 10
    write_csv(tmp_path / "train.csv", train, [1] * 30 + [0] * 30)
    write_csv(tmp_path / "test.csv", test, [1] * 10 + [0] * 10)
    return tmp_path / "train.csv", tmp_path / "test.csv", train, test


def test_a_spec_with_csv_files_trains_on_exactly_those_strings(csv_files):
    train_path, test_path, train, test = csv_files
    (config,) = expand(spec({"kind": "classify", "train_file": str(train_path), "test_file": str(test_path)}))
    assert len(config.task.data_sha256) == 16 and config.flat()["data_sha256"] == config.task.data_sha256
    data = task_data(config.task)
    assert [d.strings for d in data] == [train, test]
    assert data[0].targets.tolist() == [1.0] * 30 + [0.0] * 30
    record = run_one(config)
    assert record.status == "done", record.reason


def test_next_symbol_tasks_read_one_string_per_line(tmp_path):
    embedded = get_grammar("embedded")
    lines = {name: embedded.sample(12, seed=seed) for seed, name in enumerate(("train", "test"))}
    for name, strings in lines.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(strings) + "\n")
    task = {"kind": "next_symbol", "grammar": "embedded", "train_file": str(tmp_path / "train.txt"),
            "test_file": str(tmp_path / "test.txt")}
    (config,) = expand(spec(task))
    train, test = task_data(config.task)
    assert [len(train.strings), len(test.strings)] == [12, 12] and train.task == "next_symbol"


@pytest.mark.parametrize("content, message", [
    ("", r"train.csv: the file is empty"),
    (",string,valid\n", r"train.csv: no rows"),
    (",string\n0,BTSSXXTVVE\n", r"train.csv: missing column\(s\) \['valid'\]"),
    (",string,valid\n0,BTSSXXTVVE,1\n1,BTXSE,2\n", r"train.csv: row 3: valid must be 0 or 1, got '2'"),
    (",string,valid\n0,BTSSXXTVVE,1\n1,btxse,0\n", r"train.csv: row 3: strings must be non-empty upper-case letters"),
    (",string,valid\n0,,1\n", r"train.csv: row 2: strings must be non-empty"),
])
def test_bad_csv_files_get_one_line_naming_file_and_row(tmp_path, csv_files, content, message):
    (tmp_path / "train.csv").write_text(content)
    task = {"kind": "classify", "train_file": str(tmp_path / "train.csv"), "test_file": str(csv_files[1])}
    with pytest.raises(SpecError, match=r"^tasks\[0\]\.train_file: .*" + message) as caught:
        validate_spec(spec(task))
    assert "\n" not in str(caught.value)


def test_bad_line_files_and_bad_combinations_are_named(tmp_path, csv_files):
    (tmp_path / "train.txt").write_text("BTBTSSXXTVVETE\nBTBTXE\n")
    task = {"kind": "next_symbol", "grammar": "embedded", "train_file": str(tmp_path / "train.txt"),
            "test_file": str(tmp_path / "train.txt")}
    with pytest.raises(SpecError, match=r"train.txt: line 2: 'BTBTXE' is not a string of grammar"):
        validate_spec(spec(task))
    cases = [
        ({"kind": "classify", "train_file": str(csv_files[0])}, r"tasks\[0\]\.test_file: is required"),
        ({"kind": "continual", "train_file": str(csv_files[0]), "test_file": str(csv_files[1])},
         r"data files are for kinds \['classify', 'next_symbol'\], not 'continual'"),
        ({"kind": "classify", "train_file": str(tmp_path / "nope.csv"), "test_file": str(csv_files[1])},
         r"cannot read .*nope.csv: No such file"),
        ({"kind": "classify", "data_sha256": "abc"}, r"data_sha256: is only for tasks with train_file"),
    ]
    for task, message in cases:
        with pytest.raises(SpecError, match=message):
            validate_spec(spec(task))


def test_a_changed_file_is_a_different_run_and_is_refused_by_an_old_config(csv_files):
    train_path, test_path, train, _ = csv_files
    task = {"kind": "classify", "train_file": str(train_path), "test_file": str(test_path)}
    (before,) = expand(spec(task))
    write_csv(train_path, train[:-1], [1] * 30 + [0] * 29)
    (after,) = expand(spec(task))
    assert before.run_id != after.run_id and before.task.data_sha256 != after.task.data_sha256
    with pytest.raises(ValueError, match="the data files changed since the spec was validated"):
        task_data(before.task)
    with pytest.raises(SpecError, match="data_sha256: the files changed: their hash is now"):
        validate_spec(spec({**task, "data_sha256": before.task.data_sha256}))


def test_relative_paths_are_relative_to_the_spec_file(tmp_path, csv_files):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "s.toml").write_text(
        '[[generators]]\nname = "ring_lattice"\nparams = { n = 6, k = 2 }\n'
        '[[tasks]]\nkind = "classify"\ntrain_file = "../train.csv"\ntest_file = "../test.csv"\n')
    config = expand(load_spec(folder / "s.toml"))[0]
    assert config.task.train_file == str(csv_files[0].resolve())


@pytest.mark.reference
def test_the_studys_dataset_files_validate(stier2021):
    folder = stier2021 / "dataset"
    (config,) = expand(spec({"kind": "classify", "train_file": str(folder / "train_data.csv"),
                             "test_file": str(folder / "test_data.csv")}))
    train, test = task_data(config.task)
    assert (len(train.strings), len(test.strings)) == (18_750, 6_250)
    assert int(train.targets.sum() + test.targets.sum()) == 12_500
