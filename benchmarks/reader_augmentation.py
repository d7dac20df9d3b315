"""The demo world's learned reader (openwan.demo.world_reader) read alone on paraphrase sets it did not learn,
with and without copies of its training texts misspelt at random (one word in four: a letter dropped, doubled,
swapped with its neighbour or a vowel changed). Five folds of the sets ``paraphrase11`` onwards, each left out of
training in turn; counts the classic-motion prompts whose color, shape and motion the reader's best guess gets,
and those the extension (rules, then reader) reads whole. docs/demo.md, "A sixth decision rule", reports it.

    python benchmarks/reader_augmentation.py --copies 0 1
"""
from __future__ import annotations

import argparse
import random
import time


def typo(word: str, r: random.Random) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i, k = r.randrange(1, len(word) - 1), r.random()
    if k < 0.35:
        return word[:i] + word[i + 1:]
    if k < 0.6:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if k < 0.8:
        return word[:i] + word[i] + word[i:]
    return word[:i] + r.choice("aeiou") + word[i + 1:]


def augment(data: list, copies: int) -> list:
    r = random.Random(0)
    return data + [(" ".join(typo(w, r) if r.random() < 0.25 else w for w in text.split()), labels)
                   for text, labels in data for _ in range(copies)]


def run(copies: int, folds: list) -> dict:
    from openwan import prompt_extend
    from openwan.demo import bench_sets, world
    from openwan.demo import world_reader_build as B
    from openwan.demo.world_captions import CANONICAL_PHRASE
    from openwan.demo.world_reader import model_from, probabilities
    total = {"prompts": 0, "color": 0, "shape": 0, "motion": 0, "extension": 0}
    for fold in folds:
        model = model_from(B.train(augment(B.examples(holdout=fold, through=None), copies)))
        for c in bench_sets.cases(list(fold)):
            a = c.objects[0]
            if a.motion in world.LOOPING_MOTIONS:
                continue
            p = probabilities(c.prompt, model)
            total["prompts"] += 1
            for attr in ("color", "shape", "motion"):
                total[attr] += max(p[attr], key=p[attr].get) == getattr(a, attr)
            want = f"{a.color} {a.shape} {CANONICAL_PHRASE[a.motion]}"
            total["extension"] += prompt_extend.extend(c.prompt, "world", reader=model).endswith(want)
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, nargs="+", default=[0, 1], help="misspelt copies of each training text")
    ap.add_argument("--first_set", type=int, default=10, help="index of the first paraphrase set in the folds")
    a = ap.parse_args(argv)
    from openwan.demo import bench_sets
    sets = bench_sets.PARAPHRASE_SETS[a.first_set:]
    folds = [sets[i::5] for i in range(5)]
    for copies in a.copies:
        t0 = time.perf_counter()
        print(f"copies {copies}: {run(copies, folds)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
