"""Trains the demo world's learned prompt reader (:mod:`openwan.demo.world_reader`) and writes
``assets/world_reader.json``: ``python -m openwan.demo.world_reader_build``. A developer's tool (torch, which the
package needs anyway). ``--holdout SETS`` leaves paraphrase sets out of training and reports how the extension reads
them with and without the reader (the way to judge it on wording it has not seen); ``--read SETS`` counts the
prompts of each set the extension reads whole.

Data: the world's captions (every color, shape and motion, :data:`CAPTIONS_PER_COMBINATION` captions each in its
wide templates), captions that leave one attribute out ("a square moving left", "the red one moving left", "a red
square", the reference captions "the object moving left"; that attribute's class :data:`NONE`), and the paraphrase
sets of ``assets/paraphrase_sets.json`` through :data:`TRAINED_THROUGH` (one object each). Model: per attribute,
a multinomial logistic regression over :func:`~openwan.demo.world_reader.features` seen at least
:data:`MIN_COUNT` times, L2-regularised, fit by full-batch L-BFGS from zeros (deterministic).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from typing import Optional

import numpy as np

from openwan.demo.world_reader import ATTRIBUTES, NONE, READER_PATH, features, model_from

CAPTIONS_PER_COMBINATION = 4
MIN_COUNT = 2
L2 = 1e-3
DECIMALS = 3
TRAINED_THROUGH = "paraphrase36"     # the sets the shipped reader learnt from (later ones judged it)


def examples(holdout=(), through: Optional[str] = TRAINED_THROUGH) -> list:
    """(text, {attribute: class}) pairs: the world's captions, captions that leave one attribute out (its class
    :data:`NONE`), and the paraphrase sets up to ``through`` (None: all) not held out."""
    from openwan.demo import bench_sets, world
    rng = np.random.default_rng(0)
    out = []
    for color in world.COLOR_NAMES:
        for shape in world.SHAPES:
            for motion in world.MOTIONS:
                a = world.Attributes(color, shape, motion)
                for _ in range(CAPTIONS_PER_COMBINATION):
                    out.append((world.make_caption([a], rng, wide=True), a._asdict()))
    # what a prompt that does not name an attribute says of it: nothing (the class NONE), so the reader guesses
    # only from words, not from what is common ("the object moving to the right": no color, no shape)
    from openwan.demo.world_captions import describe, reference_caption
    for color in world.COLOR_NAMES:
        for shape in world.SHAPES:
            for motion in world.MOTIONS:
                a = world.Attributes(color, shape, motion)
                for template, drop in (("a {shape} {motion}", ("color",)), ("the {color} one {motion}", ("shape",)),
                                       ("a {color} {shape}", ("motion",))):
                    out.append((describe(a, rng, template=template, wide=True),
                                {**a._asdict(), **{k: NONE for k in drop}}))
    for motion in world.MOTIONS:
        for _ in range(CAPTIONS_PER_COMBINATION):
            out.append((reference_caption(motion, rng), {"color": NONE, "shape": NONE, "motion": motion}))
    for name in bench_sets.PARAPHRASE_SETS:
        if name not in holdout and (through is None or bench_sets.PARAPHRASE_SETS.index(name) <=
                                    bench_sets.PARAPHRASE_SETS.index(through)):
            out += [(c.prompt, c.objects[0]._asdict()) for c in bench_sets.cases([name])]
    return out


def train(data: list) -> dict:
    import torch
    feats = [features(text) for text, _ in data]
    counts = Counter(f for fs in feats for f in set(fs))
    vocab = sorted(f for f, n in counts.items() if n >= MIN_COUNT)
    index = {f: i for i, f in enumerate(vocab)}
    x = torch.zeros(len(data), len(vocab), dtype=torch.float64)
    for r, fs in enumerate(feats):
        for f in fs:
            if f in index:
                x[r, index[f]] += 1.0
    heads = {}
    for attr in ATTRIBUTES:
        classes = sorted({labels[attr] for _, labels in data})
        y = torch.tensor([classes.index(labels[attr]) for _, labels in data])
        w = torch.zeros(len(vocab), len(classes), dtype=torch.float64, requires_grad=True)
        b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

        def loss_fn():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ w + b, y) + L2 * (w * w).sum()
            loss.backward()
            return loss
        opt.step(loss_fn)
        heads[attr] = {"classes": classes, "bias": [round(v, DECIMALS) for v in b.detach().tolist()],
                       "weights": [[round(v, DECIMALS) for v in row] for row in w.detach().tolist()]}
    return {"features": vocab, "heads": heads}


def holdout_report(holdout: list) -> dict:
    """Train without ``holdout`` and read its classic-motion prompts with the rules alone and with the reader."""
    from openwan import prompt_extend
    from openwan.demo import bench_sets, world
    from openwan.demo.world_captions import CANONICAL_PHRASE
    model = model_from(train(examples(holdout)))
    rows = {"rules": 0, "rules + reader": 0, "prompts": 0}
    misses = []
    for name in holdout:
        for c in bench_sets.cases([name]):
            a = c.objects[0]
            if a.motion in world.LOOPING_MOTIONS:
                continue
            want = f"{a.color} {a.shape} {CANONICAL_PHRASE[a.motion]}"
            rows["prompts"] += 1
            rows["rules"] += prompt_extend.extend(c.prompt, "world", reader=False).endswith(want)
            got = prompt_extend.extend(c.prompt, "world", reader=model)
            rows["rules + reader"] += got.endswith(want)
            if not got.endswith(want):
                misses.append((c.prompt, got))
    return {"counts": rows, "misses": misses}


def read_whole(name: str) -> int:
    """How many of a paraphrase set's prompts the extension (rules, then the shipped reader) reads whole: into the
    canonical caption of the colour, shape and motion the set asks for."""
    from openwan import prompt_extend
    from openwan.demo import bench_sets
    from openwan.demo.world_captions import CANONICAL_PHRASE
    return sum(prompt_extend.extend(c.prompt, "world").endswith(
        f"{c.objects[0].color} {c.objects[0].shape} {CANONICAL_PHRASE[c.objects[0].motion]}")
        for c in bench_sets.cases([name]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m openwan.demo.world_reader_build", description=__doc__.split("\n")[0])
    ap.add_argument("--holdout", default="", help="paraphrase sets to leave out and report on (comma separated); "
                                                   "each is left out alone in turn")
    ap.add_argument("--read", default="", help="paraphrase sets to count the prompts read whole of (comma "
                                               "separated), with the shipped rules and reader")
    args = ap.parse_args(argv)
    if args.read:
        from openwan.demo import bench_sets
        for name in args.read.split(","):
            print(f"{name}: {read_whole(name)} / {len(bench_sets.cases([name]))} read whole")
        return 0
    if args.holdout:
        total = Counter()
        for name in args.holdout.split(","):
            r = holdout_report([name])
            total.update(r["counts"])
            print(f"{name}: {r['counts']}")
            for prompt, got in r["misses"]:
                print(f"   {prompt[:90]!r} -> {got!r}")
        print(f"all: {dict(total)}")
        return 0
    from openwan.fileio import atomic_write
    data = {"trained_through": TRAINED_THROUGH, **train(examples())}
    text = json.dumps(data, separators=(",", ":")) + "\n"
    atomic_write(READER_PATH, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {READER_PATH}: {len(data['features'])} features, {len(text) // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
