"""Fine-tuning the Wan DiT with flow matching: full or LoRA, one process or many (FSDP2 / DDP).

    openwan cache-latents ...        -> openwan.training.cache.cache_latents
    openwan train --config x.yaml    -> openwan.training.trainer.train_from_config (the loop)
        config.py (typed sections), objectives.py (the loss, injectable), checkpoint.py (save / resume /
        export), launch.py (torchrun, local processes, FSDP2 / DDP)
    LoRA files (train, save, load, stack, merge) -> openwan.training.lora

See docs/training.md.
"""
from openwan.training.lora import (add_lora, load_lora, lora_state_dict, merge_lora, remove_lora,
                                   save_lora, set_lora_strength, unmerge_lora)
from openwan.training.loss import TimestepSampling, flow_matching_loss, sigma_to_timestep

__all__ = ["add_lora", "load_lora", "lora_state_dict", "merge_lora", "remove_lora", "save_lora", "set_lora_strength",
           "unmerge_lora", "TimestepSampling", "flow_matching_loss", "sigma_to_timestep", "Trainer", "TrainConfig",
           "train_from_config", "launch_local", "cache_latents", "InMemoryLatentDataset", "CachedLatentDataset",
           "MediaDataset", "read_captions", "Objective", "FlowMatching", "Batch", "register_objective"]


def __getattr__(name):  # the trainer / cache / data pull in more; load them on first use
    import importlib
    table = {"Trainer": "trainer", "TrainConfig": "config", "train_from_config": "trainer",
             "launch_local": "trainer", "cache_latents": "cache", "InMemoryLatentDataset": "data",
             "CachedLatentDataset": "data", "MediaDataset": "data", "read_captions": "data",
             "Objective": "objectives", "FlowMatching": "objectives", "Batch": "objectives",
             "register_objective": "objectives"}
    if name in table:
        return getattr(importlib.import_module(f"openwan.training.{table[name]}"), name)
    raise AttributeError(f"module 'openwan.training' has no attribute {name!r}")
