"""Build the tiny tokenizer shipped in ``openwan/assets/tiny_tokenizer/``.

The published text encoder uses the umT5 SentencePiece tokenizer (256k pieces, ~16 MB), far too big
to ship with a package that must run its tests and its demo offline. This script trains a small
byte-pair-encoding (BPE) tokenizer with the ``tokenizers`` library on a synthetic English corpus made of the words a
video prompt uses (shapes, colours, motions, scenes, camera words, plus common function words), and
saves it in the folder layout that ``transformers.AutoTokenizer`` reads.

It follows the T5 conventions the text encoder relies on:
  * id 0 = ``<pad>``, id 1 = ``</s>`` (end of sequence, appended to every prompt), id 2 = ``<unk>``;
  * SentencePiece-style ``▁`` word boundaries (Metaspace), NFKC normalisation;
  * BPE rather than umT5's Unigram: on a corpus this small the Unigram trainer keeps few whole words
    (it splits even "red"), while BPE makes every frequent prompt word one piece;
  * every ASCII letter, digit and punctuation mark is in the vocabulary, so any English prompt
    tokenizes without ``<unk>``; other scripts (e.g. the Chinese negative prompt) map to ``<unk>``.

Run from the repository root (deterministic; a few seconds on one core)::

    python tools/make_tiny_tokenizer.py [--out openwan/assets/tiny_tokenizer] [--vocab-size 1000]
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import string
from pathlib import Path

SPECIALS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5

SHAPES = """cube sphere ball cone cylinder pyramid ring torus star heart square circle triangle rectangle
    hexagon disk box block line dot wave spiral arrow cross grid stripe bubble cloud drop""".split()
COLORS = """red orange yellow green blue purple violet pink brown black white gray grey gold silver cyan
    magenta teal navy beige crimson turquoise bright dark light pale colorful""".split()
MOTIONS = """moves moving rotates rotating spins spinning bounces bouncing falls falling rises rising flies
    flying floats floating slides sliding rolls rolling runs running walks walking jumps jumping dances
    dancing swims swimming grows growing shrinks shrinking flows flowing waves waving turns turning
    drifts drifting glides gliding zooms zooming pans panning tilts tilting orbits orbiting shakes
    shaking explodes melts melting sways swaying""".split()
SUBJECTS = """cat dog bird fish horse person man woman child girl boy robot car train boat ship plane
    tree flower leaf river ocean sea lake mountain hill forest city street road building house bridge
    sky sun moon water fire smoke snow rain light shadow camera scene video frame background
    astronaut dragon butterfly rabbit panda fox bear wolf""".split()
ADJECTIVES = """big small large tiny huge little tall short long round flat smooth soft hard shiny glowing
    wooden metal glass golden slow fast quick gentle calm beautiful cinematic realistic detailed
    sharp blurry static still empty quiet loud happy old new young ancient modern sunny cloudy
    foggy snowy rainy warm cold high low""".split()
PLACES = """on in under over above below behind near across through around along inside outside between
    toward towards into onto from at""".split()
CAMERA = """shot close up wide angle aerial view slow motion tracking handheld macro portrait landscape
    lighting sunset sunrise night day morning evening studio 4k hd quality film style""".split()
FUNCTION = """a an the and or but of to with is are was were be been it its this that these those they
    he she we you i his her their our my your as by for not no very more most some many one two three
    four five first last then while when where there here up down left right back front side top
    bottom center middle end begins slowly quickly smoothly suddenly together alone again""".split()
GENERAL = """about after all also always animal any arm art baby bag bed between bicycle blue body book
    bottle bowl bread cake candle card carpet chair cheese city clock coat coffee computer corner
    cup curtain desk door dress eye face family farm fence field finger floor food foot friend fruit
    garden glass grass ground hair hand hat head horizon ice island jacket key kitchen lamp lawn
    leg letter lights lines man market mirror mouth music nature night nose paint paper park path
    pencil phone piano picture plate pool rain road rock roof room rope sand school screen shoe shop
    sign smile sound space stone storm table tea tent toy tower town toys umbrella valley wall
    wheel window wing wind winter summer spring autumn world yard beach desert jungle meadow waterfall
    candy kite balloon lantern neon reflection surface texture pattern colors shapes objects motion
    camera movement background foreground person people animals group crowd slowly gently walking
    looking holding playing sitting standing smiling talking singing reading writing eating drinking
    painting cooking wearing carrying opening closing breaking falling appear appears disappear
    shows show made make across against away every each other another same different next before
    during over under still just only even like than so because if would could should can will""".split()

TEMPLATES = [
    "a {adj} {color} {shape} {motion} {place} the {subject}",
    "the {subject} {motion} {place} a {color} {shape}",
    "{camera} {camera} of a {adj} {subject} {motion} {place} the {adj} {subject}",
    "a {color} {subject} and a {color} {shape} {motion} together",
    "{adj} {color} {shape}s {motion} {place} the {subject}, {camera} {camera}",
    "the {adj} {subject} is {motion} {place} the {color} {subject}.",
    "{function} {function} {adj} {subject} {function} {color} {shape} {motion}",
    "{general} {function} {general} {general} {function} {adj} {general} {motion}",
    "the {general} {place} the {general} is {adj} and {color}",
]


def corpus(n_sentences: int = 20000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pools = {"shape": SHAPES, "color": COLORS, "motion": MOTIONS, "subject": SUBJECTS,
             "adj": ADJECTIVES, "place": PLACES, "camera": CAMERA, "function": FUNCTION,
             "general": GENERAL}
    lines = []
    for i in range(n_sentences):
        tpl = TEMPLATES[i % len(TEMPLATES)]
        # a fresh word for every placeholder, even when a name repeats in the template
        text = tpl
        for name in pools:
            while "{" + name + "}" in text:
                text = text.replace("{" + name + "}", rng.choice(pools[name]), 1)
        if rng.random() < 0.3:
            text = text[0].upper() + text[1:]
        if rng.random() < 0.2:
            text += f" {rng.randint(0, 100)}"
        lines.append(text)
    # every word of every list at least a few times, so each becomes a whole piece
    words = sorted(set(itertools.chain(*(p for p in pools.values()))))
    lines.extend(" ".join(words[i:i + 12]) for i in range(0, len(words), 12))
    lines.append(string.ascii_letters + " " + string.digits + " " + string.punctuation)
    return lines


def build(vocab_size: int = 1000):
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("\u2581", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    alphabet = list(string.ascii_letters + string.digits + string.punctuation) + ["\u2581"]
    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=alphabet,
                         show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, f"{s} must have id {i}, got {tok.token_to_id(s)}"
    # T5 appends </s> to every sequence.
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return tok


def save(tok, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": "<pad>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 512,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (out / "README.md").write_text(
        "Tiny BPE tokenizer (T5 conventions: <pad>=0, </s>=1, <unk>=2) for tests and the demo model.\n"
        f"Vocabulary size {tok.get_vocab_size()}. Rebuild with `python tools/make_tiny_tokenizer.py`.\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "openwan" / "assets" / "tiny_tokenizer")
    ap.add_argument("--vocab-size", type=int, default=1000)
    args = ap.parse_args(argv)
    tok = build(args.vocab_size)
    save(tok, args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} (vocab {tok.get_vocab_size()}, {size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
