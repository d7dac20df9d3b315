"""What the long-video experiments in benchmarks/ share (long_noise.py, long_window.py, long_sampler.py,
long_select.py, long_shift.py, long_pace.py, history_guidance.py, autoguidance.py): their common options and the run of
``openwan bench long``'s measurement (openwan.demo.long_bench) of the default method over the looping or the classic
prompts (or, ``extend``, of the world's own clips extended), printed as one JSON line and written whole with ``--json``."""
from __future__ import annotations

import json


def add_options(ap) -> None:
    """The options every experiment takes: the prompts, seeds, length, steps and a JSON file."""
    ap.add_argument("--prompts", choices=["classic", "bounce"], default="bounce")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first_seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=161)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", default=None)


def demo_pipeline():
    """The shipped demo's pipeline, on the one thread every experiment measures with."""
    import torch

    from openwan.pipelines import load_pipeline
    torch.set_num_threads(1)
    return load_pipeline("demo", progress=False)


def wrap_denoisers(pipe, wrap) -> None:
    """Every denoiser ``pipe`` makes from now on passed through ``wrap(pipe, d, cond, guidance, windows, dit)`` (an
    experiment's change to some windows' velocity: ``dit`` None or the main DiT for a first window or a native video,
    ``windows`` set for the refinement pass)."""
    cls = type(pipe)
    plain = cls.denoiser

    def denoiser(self, cond, guidance, step_cache=None, windows=None, dit=None):
        return wrap(self, plain(self, cond, guidance, step_cache, windows, dit), cond, guidance, windows, dit)
    cls.denoiser = denoiser


def run(pipe, a, label: dict, extend: bool = False, **sample_kw) -> int:
    """``continue`` videos of ``a``'s prompts and seeds measured (``extend``: the world's clips of the extension
    prompts extended instead); prints ``label`` with the targets met."""
    import torch

    from openwan.demo import long_bench
    seeds = range(a.first_seed, a.first_seed + a.seeds)
    with torch.inference_mode():
        if extend:
            records = long_bench.run_source_benchmark(pipe, long_bench.EXTEND_PROMPTS, seeds, ["extend"], a.frames,
                                                      progress=False, sample_steps=a.steps, **sample_kw)
        else:
            prompts = list(long_bench.BOUNCE_PROMPTS if a.prompts == "bounce" else long_bench.DEFAULT_PROMPTS)
            records = long_bench.run_long_benchmark(pipe, prompts, seeds, ["continue"], a.frames, progress=False,
                                                    sample_steps=a.steps, **sample_kw)
    s = long_bench.summarize(records)["extend" if extend else "continue"]
    print(json.dumps({**label, "meets": s["meets"], "judged": s["judged"], "targets met": sum(s["meets"].values())}))
    if a.json:
        from pathlib import Path

        from openwan.fileio import write_json
        write_json({"settings": vars(a), "summary": s, "videos": records}, Path(a.json))
    return 0
