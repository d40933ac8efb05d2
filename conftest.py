"""Every test session, core and plugins: frozen-backbone feature caches go to a temporary folder, never into the
user's data cache ($CONVERGE_DATA_DIR/features); the data sets are still read from the data cache, where they
are fetched once and shared."""

from __future__ import annotations

import pytest

from converge.training.feature_cache import FEATURES_DIR_ENV


@pytest.fixture(scope="session", autouse=True)
def features_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FEATURES_DIR_ENV, str(tmp_path_factory.mktemp("features")))
        yield
