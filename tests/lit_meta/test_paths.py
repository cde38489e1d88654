"""The user data folder (lit_meta.paths): $LIT_META_DATA, else $XDG_CACHE_HOME/lit-meta, else
~/.cache/lit-meta; the datamodules given no `data_dir` read their data set's folder there."""

import os
import re

import pytest

from datamodules import (
    CIFARFSDataModule,
    FC100DataModule,
    MiniImageNetDataModule,
    OmniglotDataModule,
    TieredImageNetDataModule,
)
from lit_meta import paths
from tests.helpers import ROOT


@pytest.fixture
def no_data_variables(monkeypatch, tmp_path):
    """Neither variable set (the Makefile exports LIT_META_DATA for the suite); HOME in tmp_path."""
    monkeypatch.delenv("LIT_META_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_the_environment_variable_comes_first(no_data_variables, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(no_data_variables / "cache"))
    monkeypatch.setenv("LIT_META_DATA", str(no_data_variables / "data"))
    assert paths.data_root() == str(no_data_variables / "data")
    assert paths.data_dir("omniglot") == str(no_data_variables / "data" / "omniglot")


def test_a_relative_or_home_relative_variable_is_made_absolute(no_data_variables, monkeypatch):
    monkeypatch.chdir(no_data_variables)
    monkeypatch.setenv("LIT_META_DATA", "../shared/data")
    assert paths.data_root() == os.path.abspath(no_data_variables / ".." / "shared" / "data")
    monkeypatch.setenv("LIT_META_DATA", "~/datasets")
    assert paths.data_root() == str(no_data_variables / "home" / "datasets")


def test_the_xdg_cache_folder_comes_next(no_data_variables, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(no_data_variables / "cache"))
    monkeypatch.setenv("LIT_META_DATA", "")  # empty: as if unset
    assert paths.data_dir("fc100") == str(no_data_variables / "cache" / "lit-meta" / "fc100")


def test_the_home_cache_folder_is_the_default(no_data_variables):
    assert paths.data_root() == str(no_data_variables / "home" / ".cache" / "lit-meta")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", None])
def test_a_name_that_is_not_one_folder_is_refused(name):
    with pytest.raises(ValueError, match="Expected a data set's folder name"):
        paths.data_dir(name)


def test_datamodules_without_data_dir_read_the_user_data_folder(no_data_variables, monkeypatch):
    monkeypatch.setenv("LIT_META_DATA", str(no_data_variables / "data"))
    expected = {
        OmniglotDataModule: "omniglot",
        MiniImageNetDataModule: "mini-imagenet",
        TieredImageNetDataModule: "tiered-imagenet",
        CIFARFSDataModule: "cifar-fs",
        FC100DataModule: "fc100",
    }
    for datamodule, name in expected.items():
        assert datamodule().data_dir == str(no_data_variables / "data" / name), datamodule.__name__
        assert datamodule(data_dir="mine").data_dir == "mine"  # an explicit folder wins
        assert datamodule().download  # where nothing is given, the data is fetched


def test_the_makefile_points_the_repositorys_runs_at_the_shared_data():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^export LIT_META_DATA \?= \$\(abspath \.\./shared/data\)$", makefile, re.M)
    # The Omniglot configs name no folder: the zips are in <LIT_META_DATA>/omniglot, where the datamodule looks.
    for config in ("omniglot/base.yaml", "federated/omniglot/base.yaml"):
        assert not re.search(r"^\s*data_dir:", (ROOT / "configs" / config).read_text(), re.M), config
