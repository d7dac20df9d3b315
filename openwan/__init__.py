"""openwan: an open, from-scratch PyTorch implementation of Wan 2.1 video generation."""
__version__ = "0.1.0"

from openwan.configs import VARIANTS, TINY_VARIANTS, get_variant  # noqa: F401


def __getattr__(name):  # lazy: importing openwan stays cheap
    if name == "load_pipeline":
        from openwan.pipelines import load_pipeline
        return load_pipeline
    if name == "export_to_video":
        from openwan.video import export_to_video
        return export_to_video
    raise AttributeError(f"module 'openwan' has no attribute {name!r}")
