"""The Wan 2.1 / 2.2 model components. Imported lazily so each stays importable on its own."""
_LAZY = {
    "WanModel": "openwan.models.dit",
    "WanVAE": "openwan.models.vae",
    "WanVAE22": "openwan.models.vae22",
    "load_vae": "openwan.models.vaes",
    "TextEncoder": "openwan.models.text_encoder",
    "ImageEncoder": "openwan.models.image_encoder",
    "attention": "openwan.models.attention",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'openwan.models' has no attribute {name!r}")


__all__ = list(_LAZY)
