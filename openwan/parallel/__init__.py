"""Multi-process inference on torch.distributed (training scales with openwan.training: FSDP2 / DDP)."""
from openwan.parallel.sequence import (SequenceParallel, enable_sequence_parallel, end_process_group,
                                       init_process_group, set_sequence_parallel)
from openwan.parallel.pipeline import parallelize, pipeline_dits
from openwan.parallel.shard import shard_dit
from openwan.parallel.windows import WindowShare, enable_window_parallel
from openwan.parallel.cfg import CfgShare, enable_cfg_parallel

__all__ = ["CfgShare", "SequenceParallel", "WindowShare", "enable_cfg_parallel", "enable_sequence_parallel",
           "enable_window_parallel", "end_process_group", "init_process_group", "parallelize", "pipeline_dits",
           "set_sequence_parallel", "shard_dit"]
