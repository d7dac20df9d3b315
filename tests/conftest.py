import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REFERENCE_DIR = Path(os.environ.get("OPENWAN_REFERENCE", Path(__file__).resolve().parents[1].parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir():
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"golden vectors not found at {REFERENCE_DIR} (../shared/reference beside the repo; "
                    f"set OPENWAN_REFERENCE to point elsewhere)")
    return REFERENCE_DIR
