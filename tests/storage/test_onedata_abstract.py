"""fsspec's own test suite for implementers, run against OnedataFileSystem on the test server."""

from __future__ import annotations

# ruff: noqa: F811 -- fixtures imported from onedata_fixtures are test parameters
import posixpath
import uuid

import pytest
from fsspec.tests.abstract import AbstractFixtures
from fsspec.tests.abstract.copy import AbstractCopyTests
from fsspec.tests.abstract.get import AbstractGetTests
from fsspec.tests.abstract.open import AbstractOpenTests
from fsspec.tests.abstract.pipe import AbstractPipeTests
from fsspec.tests.abstract.put import AbstractPutTests

from tests.storage.onedata_fixtures import onedata_env, onedata_server  # noqa: F401


class OnedataFixtures(AbstractFixtures):
    """The fixtures fsspec asks implementers to provide: an fs, a scratch path, a join."""

    @pytest.fixture
    def fs(self, onedata_env):  # noqa: F811
        from nbplugins.retry import Retry
        from nbplugins.storage.onedata import OnedataFileSystem

        return OnedataFileSystem(retry=Retry(initial=0.05, cap=0.2, deadline=30), skip_instance_cache=True)

    @pytest.fixture
    def fs_join(self):
        return posixpath.join

    @pytest.fixture
    def fs_path(self, fs):
        path = f"space1/abstract-{uuid.uuid4().hex[:8]}"
        fs.makedirs(path)
        yield path
        if fs.exists(path):
            fs.rm(path, recursive=True)

    @pytest.fixture
    def supports_empty_directories(self):
        return True


class TestOnedataCopy(AbstractCopyTests, OnedataFixtures):
    pass


class TestOnedataGet(AbstractGetTests, OnedataFixtures):
    pass


class TestOnedataPut(AbstractPutTests, OnedataFixtures):
    pass


class TestOnedataOpen(AbstractOpenTests, OnedataFixtures):
    pass


class TestOnedataPipe(AbstractPipeTests, OnedataFixtures):
    pass
