import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "flickr8k"


@pytest.fixture(scope="session")
def shared_flickr8k():
    """The real Flickr8k files beside the checkout (../shared/flickr8k). CI always has them and
    fails without them; elsewhere the tests that need them are skipped, saying why."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED} is missing: CI's real-data tests need ../shared/flickr8k")
        pytest.skip(f"{SHARED} is not here: real-data tests need Flickr8k files beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    import utils
    return utils.make_sample_dataset(tmp_path_factory.mktemp("data") / "sample")
