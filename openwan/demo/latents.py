"""Stage 2 of the demo recipe: world clips and their captions, encoded once.

``encode_latents`` renders ``n_clips`` training clips, encodes them with the recipe's VAE and their captions
with the frozen text encoder, and writes ``work_dir/latents.pt``. Resumable (a partial file every 256 clips;
clip i is a function of (seed, i) alone, so a finished set can be extended).

What a clip holds (``size`` x ``size`` pixels, ``frames`` frames at the native length):

* ``latents[i]``: the clip's normalized latent [z, T, h, w]. A clip whose first object loops (bounces,
  circles) is rendered ``extend`` frames past the native length at its own speed (``extend`` a multiple of
  the VAE's 4), so its latent holds ``extend / 4`` more frames: the dataset cuts two windows of the native
  length from it, the first from frame 0 and one ``extend / 4`` latent frames later, which starts in the middle
  of the motion, as a long video's continued window does (:func:`windows`). With ``extend_classic`` a classic
  clip is rendered ``extend`` frames longer too, its whole path spread over the longer clip (a little slower, so
  it never leaves the frame), which gives it a mid-motion window as well.
* ``last_still[i]``: the latent a video ending on the clip's last frame and staying there would have in its last
  latent frame: a 5-frame still clip of that picture, encoded, latent frame 1 [z, 1, h, w]. A first-last-frame
  request gives the model only the last picture; this is what it is conditioned on (``clean_frames`` objective,
  ``flf2v`` mode), in training and at inference alike.
* ``captions[i]``: ``captions`` paraphrases; ``attributes[i]``: the objects' (color, shape, motion).
* with ``ref``: ``ref[i]``, the latent of a picture of the clip's first object alone, and ``ref_captions[i]``
  (a reference expert's data).

:func:`build_dataset` makes the DiT stage's in-memory training set of such a file.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from openwan.demo import DEMO_TEXT_ENCODER, DEMO_VAE
from openwan.pipelines.ti2v import still_latent  # noqa: F401 - what a lone last picture encodes to (flf2v)

TEXT_ENCODER_SEED = 1234            # the frozen random umT5 is a function of this seed


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def caption_variants(clip, rng: np.random.Generator, k: int) -> list[str]:
    """The clip's own caption plus k-1 other paraphrases of the same objects (distinct when possible)."""
    return distinct_captions(list(clip.objects), rng, k, first=[clip.caption])


def distinct_captions(objects, rng: np.random.Generator, k: int, first=(), wide: bool = False) -> list[str]:
    """``first`` and then captions of ``objects`` drawn from ``rng`` (``wide``: the wide caption style) until k
    differ, at most 8k draws; padded with the first caption when fewer differ."""
    from openwan.demo import world
    out = list(first)
    for _ in range(8 * k):
        if len(out) >= k:
            break
        c = world.make_caption(objects, rng, wide=wide)
        if c not in out:
            out.append(c)
    while len(out) < k:
        out.append(out[0])
    return out


def adopt_vae(work_dir: Path, init: Path, stats: Optional[Callable] = None) -> Path:
    """Put a trained VAE (a ``--stage vae`` output folder, or a whole checkpoint such as the shipped demo's) in
    ``work_dir/vae`` (fp32), for a run that reuses it instead of training one; kept if already there.
    ``stats(vae) -> (mean, std)`` measures the latent statistics anew (a VAE trained at another size encodes
    the same world with other statistics)."""
    from openwan.models.vae import WanVAE
    out = work_dir / "vae"
    if out.is_dir():
        log(f"vae: {out} already there, --init_vae {init} not copied")
        return out
    vae = WanVAE.from_pretrained(init)
    if vae.config.replace(mean=DEMO_VAE.mean, std=DEMO_VAE.std) != DEMO_VAE:
        raise ValueError(f"--init_vae {init}: its VAE's architecture differs from DEMO_VAE: {vae.config}")
    work_dir.mkdir(parents=True, exist_ok=True)
    vae = vae.float()
    if stats is not None:
        mean, std = stats(vae)
        log(f"vae latent mean {mean}")
        log(f"vae latent std  {std}")
        final = WanVAE(vae.config.replace(mean=mean, std=std))
        final.load_state_dict(vae.state_dict())
        vae = final
    vae.save_pretrained(out)
    log(f"vae: {init} copied to {out}")
    return out


def round_to_half_(module: torch.nn.Module) -> torch.nn.Module:
    """Round every floating-point weight to fp16 precision (kept in fp32): the model trained or encoded with
    is then exactly the one shipped in half precision."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    return module


def make_text_encoder(device="cpu"):
    """The frozen text encoder of the demo: a seeded random tiny umT5 (weights rounded to fp16 precision, as
    shipped) + the shipped tiny tokenizer."""
    from openwan.models.text_encoder import TINY_TOKENIZER_DIR, TextEncoder
    state = torch.random.get_rng_state()
    try:
        te = TextEncoder(DEMO_TEXT_ENCODER, TINY_TOKENIZER_DIR, seed=TEXT_ENCODER_SEED, cache_dir=False,
                         dtype=torch.float32, device=device)
    finally:
        torch.random.set_rng_state(state)
    round_to_half_(te.model)
    return te


def load_trained_vae(work_dir: Path):
    from openwan.models.vae import WanVAE
    path = work_dir / "vae"
    if not path.is_dir():
        raise FileNotFoundError(f"no trained VAE in {path}: run `python -m openwan.demo.train --stage vae` first")
    return round_to_half_(WanVAE.from_pretrained(path))


def paced(clip, rng: np.random.Generator, spread: float):
    """``clip`` with each looping object's pace the world's times one factor drawn log-uniform in [1/spread, spread]
    (its period divided by it), so a model trained on such clips has to read a motion's pace from the frames it is
    given rather than keep one of its own; classic motions are left as they are."""
    from dataclasses import replace

    from openwan.demo import world
    factor = float(np.exp(rng.uniform(-np.log(spread), np.log(spread))))
    objects = tuple(replace(o, period=o.period / factor) if o.motion in world.LOOPING_MOTIONS else o
                    for o in clip.objects)
    return replace(clip, objects=objects)


@torch.no_grad()
def encode_latents(work_dir: Path, n_clips: int = 4000, captions: int = 3, two_object_prob: float = 0.0,
                   seed: int = 0, batch: int = 16, motions=None, looping_share: Optional[float] = None,
                   size: int = 64, frames: int = 17, extend: int = 0, still: bool = False,
                   extend_classic: bool = False, ref: int = 0, two_object_order: str = "any",
                   pace_spread: float = 1.0) -> Path:
    """Render + encode ``n_clips`` training clips and their captions once (see the module docstring); resumable.

    Writes ``work_dir/latents.pt``: {"latents": [N, z, T, h, w] fp32 (normalized; a list when ``extend`` makes
    lengths differ), "captions", "attributes", "text": {caption: [L, D]}, "vae_config", "size", "frames",
    "extend", and "last_still" [N, z, 1, h, w] with ``still``; with ``ref`` k > 0 "ref" [N, z, 1, h, w], the latent
    of a picture of each clip's first object alone (``world.reference_picture``: its place and size drawn apart,
    from ``[seed, 6, i]``), and "ref_captions", k captions per clip that name the object as the picture's
    (``world.reference_caption``)}. ``motions``: the world's motions to draw from
    (default the classic seven); ``looping_share`` instead draws each clip's first object from the looping
    motions with that probability, else from the classic ones. The defaults are the first recipe's (64 px, 17
    frames, nothing extended), whose clips they reproduce. ``two_object_order="reading"`` names a two-object clip's
    objects in reading order (``world.reading_order``: the left or top one first) in every caption and in
    "attributes"; "any" (the default) keeps the draw's order. Only captions change: the latents are the same.
    ``pace_spread`` s > 1 gives each looping clip a pace of its own, the world's times a factor drawn log-uniform in
    [1/s, s] (:func:`paced`; from ``[seed, 7, i]``, so the clips' other draws are the same as without it)."""
    from openwan.demo import world
    if two_object_order not in ("any", "reading"):
        raise ValueError(f"two_object_order must be 'any' or 'reading', got {two_object_order!r}")
    motions = world.CLASSIC_MOTIONS if motions is None else tuple(motions)
    if looping_share is not None and not 0.0 <= looping_share <= 1.0:
        raise ValueError(f"looping_share must be in [0, 1], got {looping_share}")
    if not pace_spread >= 1.0:
        raise ValueError(f"pace_spread must be >= 1 (1: the world's own pace), got {pace_spread}")
    if extend % 4 or extend < 0:
        raise ValueError(f"extend must be a non-negative multiple of the VAE's 4 frames, got {extend}")
    out = work_dir / "latents.pt"
    part = work_dir / "latents_partial.pt"
    vae = load_trained_vae(work_dir)
    keys = (("latents", "captions", "attributes") + (("last_still",) if still else ())
            + (("ref", "ref_captions") if ref else ()))
    state = {k: [] for k in keys}
    if part.exists():
        state = torch.load(part, map_location="cpu", weights_only=False)
        log(f"latents: resumed at {len(state['latents'])} clips")
    elif out.exists():                  # extend a finished set (clip i is a function of (seed, i))
        done = torch.load(out, map_location="cpu", weights_only=False)
        if len(done["latents"]) >= n_clips:
            log(f"latents: {out} already holds {len(done['latents'])} clips")
            return out
        state = {k: list(done[k]) for k in keys}
        log(f"latents: extending {out} from {len(state['latents'])} clips")
    t0 = time.perf_counter()
    while len(state["latents"]) < n_clips:
        i0 = len(state["latents"])
        n = min(batch, n_clips - i0)
        clips, videos = [], {}
        for i in range(i0, i0 + n):
            rng = np.random.default_rng([seed, 4, i])
            k = 2 if rng.random() < two_object_prob else 1
            ms = motions if looping_share is None else (
                world.LOOPING_MOTIONS if rng.random() < looping_share else world.CLASSIC_MOTIONS)
            clip = world.sample_clip(rng, split="train", n_objects=k, motions=ms)
            if pace_spread > 1.0:
                clip = paced(clip, np.random.default_rng([seed, 7, i]), pace_spread)
            looping = clip.objects[0].motion in world.LOOPING_MOTIONS
            longer = extend if looping or extend_classic else 0
            video = world.to_tensor(world.render_clip(clip, size=size, frames=frames + longer,
                                                      native_frames=frames if looping else frames + longer))
            clips.append((clip, rng, video))
            videos.setdefault(video.shape[1], []).append(len(clips) - 1)
        lat = [None] * n
        for idx in videos.values():       # one encoder batch per length
            for j, z in zip(idx, vae.encode(torch.stack([clips[j][2] for j in idx]))):
                lat[j] = z.clone()
        if still:
            last = torch.stack([v[:, frames - 1] for _, _, v in clips])
            for z in still_latent(vae, last):
                state["last_still"].append(z.clone())
        if ref:
            pics, start = [], len(state["latents"])
            for j, (clip, _, _) in enumerate(clips):
                r = np.random.default_rng([seed, 6, start + j])
                pics.append(world.to_tensor(world.reference_picture(clip.objects[0], r, size=size)[None]))
                state["ref_captions"].append([world.reference_caption(clip.objects[0].motion, r) for _ in range(ref)])
            for z in vae.encode(torch.stack(pics)):
                state["ref"].append(z.clone())
        for (clip, rng, _), z in zip(clips, lat):
            state["latents"].append(z)
            if two_object_order == "reading" and len(clip.objects) == 2:
                objects = world.reading_order(clip.objects)
                state["captions"].append(distinct_captions(objects, rng, captions))
            else:
                objects = clip.objects
                state["captions"].append(caption_variants(clip, rng, captions))
            state["attributes"].append([tuple(o.attributes) for o in objects])
        done = len(state["latents"])
        if done // (batch * 16) != i0 // (batch * 16) or done == n_clips:   # every 256 clips
            _atomic_torch_save(state, part)
            el = time.perf_counter() - t0
            log(f"latents: {done}/{n_clips} clips ({el:.0f}s)")
    text = encode_captions(state["captions"] + state.get("ref_captions", []))
    same = len({tuple(z.shape) for z in state["latents"]}) == 1
    result = {"latents": torch.stack(state["latents"]) if same else list(state["latents"]),
              "captions": state["captions"], "attributes": state["attributes"], "text": text,
              "vae_config": vae.config.to_dict(), "size": size, "frames": frames, "extend": extend,
              "extend_classic": bool(extend_classic and extend)}
    if still:
        result["last_still"] = torch.stack(state["last_still"])
    if ref:
        result.update(ref=torch.stack(state["ref"]), ref_captions=state["ref_captions"])
    _atomic_torch_save(result, out)
    part.unlink(missing_ok=True)
    log(f"latents: saved {out}")
    return out


def encode_captions(captions) -> dict:
    """{caption: features [L, D] fp32} of every caption in ``captions`` (a list of each clip's captions) and of
    the empty prompt, by the demo's frozen text encoder."""
    te = make_text_encoder()
    unique = sorted({c for caps in captions for c in caps} | {""})
    text = {}
    for i in range(0, len(unique), 256):
        chunk = unique[i:i + 256]
        for c, e in zip(chunk, te.encode(chunk)):
            text[c] = e.float().clone()
    log(f"latents: {len(unique)} unique captions encoded")
    return text


def recaption_latents(source: Path, out: Path, captions: int = 4, seed: int = 0, wide: bool = True) -> Path:
    """A latents file of the same clips with new captions: ``captions`` per clip drawn from each clip's
    attributes (``wide``: the wide caption style, ``openwan.demo.world_captions.WIDE_TEMPLATES``; no size words,
    which the attributes do not record), encoded by the frozen text encoder; clip i's captions are a function of
    (seed, i). Everything else is ``source``'s; written atomically to ``out`` (never over ``source``)."""
    from openwan.demo import world
    source, out = Path(source), Path(out)
    if not source.exists():
        raise FileNotFoundError(f"latents file not found: {source}")
    if out.resolve() == source.resolve():
        raise ValueError(f"the recaptioned file {out} would overwrite its source: write it elsewhere")
    if captions < 1:
        raise ValueError(f"captions must be >= 1, got {captions}")
    data = torch.load(source, map_location="cpu", weights_only=False)
    new = []
    for i, attrs in enumerate(data["attributes"]):
        new.append(distinct_captions([world.Attributes(*a) for a in attrs], np.random.default_rng([seed, 9, i]),
                                     captions, wide=wide))
    data = dict(data, captions=new, text=encode_captions(new))
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_torch_save(data, out)
    log(f"latents: {len(new)} clips recaptioned ({captions} captions each{', wide style' if wide else ''}) "
        f"into {out}")
    return out


def _same_features(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same caption's features from the same text encoder: equal up to the rounding that another batch
    (its padding) gives through the encoder's layers, a few fp32 ulps of the features' scale (measured: 4.6);
    another encoder differs at the scale of the features themselves."""
    if a.shape != b.shape:
        return False
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() <= 64 * torch.finfo(torch.float32).eps * scale


def merge_latents(paths, out: Path) -> Path:
    """One latents file of several made by :func:`encode_latents` (e.g. a set of one-object clips added to a
    mixed one): clips, captions and attributes in the order given, the caption features united. The files
    must share the VAE (config and latent statistics), the clip size and native length, and all carry
    ``last_still`` or none; written atomically to ``out``."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError("merging needs at least two latents files")
    if Path(out).resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"the merged file {out} would overwrite one of its inputs: write it elsewhere")
    parts = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"latents file not found: {p}")
        parts.append(torch.load(p, map_location="cpu", weights_only=False))
    first = parts[0]
    for p, d in zip(paths[1:], parts[1:]):
        for key in ("vae_config", "size", "frames"):
            if d.get(key) != first.get(key):
                raise ValueError(f"{p} was made with another {key} than {paths[0]} ({d.get(key)} vs "
                                 f"{first.get(key)}): only latents of the same VAE, size and length merge")
        if ("ref" in d) != ("ref" in first):
            raise ValueError(f"{p} and {paths[0]}: one has reference pictures (--ref), the other not; encode both "
                             f"with or both without --ref")
        if ("last_still" in d) != ("last_still" in first):
            raise ValueError(f"{p} and {paths[0]}: one has last-frame stills (--still), the other not; "
                             f"encode both with or both without --still")
    latents = [z for d in parts for z in d["latents"]]
    text = {}
    for p, d in zip(paths, parts):
        for caption, feats in d["text"].items():
            if caption in text and not _same_features(text[caption], feats):
                raise ValueError(f"{p}: the features of {caption!r} differ from another file's (another text "
                                 f"encoder?): only latents of the same text encoder merge")
            text.setdefault(caption, feats)
    same = len({tuple(z.shape) for z in latents}) == 1
    result = {"latents": torch.stack(latents) if same else latents,
              "captions": [c for d in parts for c in d["captions"]],
              "attributes": [a for d in parts for a in d["attributes"]], "text": text,
              "vae_config": first["vae_config"], "size": first["size"], "frames": first["frames"],
              "extend": max(d.get("extend", 0) for d in parts),
              "extend_classic": any(d.get("extend_classic", False) for d in parts)}
    if "last_still" in first:
        result["last_still"] = torch.cat([d["last_still"] for d in parts])
    if "ref" in first:
        result.update(ref=torch.cat([d["ref"] for d in parts]),
                      ref_captions=[c for d in parts for c in d["ref_captions"]])
    _atomic_torch_save(result, Path(out))
    log(f"latents: merged {len(latents)} clips from {len(paths)} files into {out}")
    return Path(out)


def windows(latent: torch.Tensor, frames: int, temporal_ratio: int = 4) -> list[tuple[torch.Tensor, bool]]:
    """The training windows of a clip's latent: (window [z, T, h, w], starts mid-motion). A native-length latent
    is one window; an extended one gives the window from frame 0 and the last native-length window (which does
    not start at a picture's latent: a continued long video's window starts so)."""
    t = (frames - 1) // temporal_ratio + 1
    if latent.shape[1] < t:
        raise ValueError(f"a latent of {latent.shape[1]} frames is shorter than the native {t}")
    out = [(latent[:, :t], False)]
    if latent.shape[1] > t:
        out.append((latent[:, -t:], True))
    return out


SUBSETS = ("all", "one-object-classic", "classic", "one-object", "one-object-looping")
WINDOWS_KEPT = ("all", "mid")


def build_dataset(latents_file: Path, caption_dropout: float = 0.1, seed: int = 0, subset: str = "all",
                  windows_kept: str = "all", reference: Optional[str] = None):
    """The in-memory training set: one item per (clip window, caption); a fraction ``caption_dropout`` of the
    items get the empty prompt's features instead (CFG). Latent tensors are shared between a clip's items.
    A latents file with ``last_still`` (``--still``) gives items for the clean-frames objective: each carries
    ``mid`` (the window starts mid-motion, openwan.demo.latents.windows) and ``last_still``. ``subset``:
    ``one-object-classic`` keeps only the clips of one object doing a classic motion (a phase that teaches the
    prompt's motion before the harder clips: docs/demo.md); ``classic`` the clips whose objects (one or two) all
    do classic motions; ``one-object`` the clips of one object, whatever its motion (the looping ones too);
    ``one-object-looping`` the clips of one object doing a looping motion (bounces, circling).
    ``windows_kept="mid"`` keeps only the windows that start mid-motion (a continuation expert's training: the
    later windows of a long video start so). ``reference`` (a latents file made with ``--ref``): each item's
    latent is the clip's reference picture's latent frame followed by the clip's first window, with the clip's
    captions and its reference captions ("both") or its reference captions only ("look-free": every prompt
    leaves the look to the picture); a reference expert's training (``--clean_shares 0,1,0,0`` gives the picture
    as the clean frame 0; openwan.pipelines.ti2v)."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}: use one of {', '.join(SUBSETS)}")
    if windows_kept not in WINDOWS_KEPT:
        raise ValueError(f"unknown --dit_windows {windows_kept!r}: use one of {', '.join(WINDOWS_KEPT)}")
    if reference not in (None, "both", "look-free"):
        raise ValueError(f"reference must be both or look-free, got {reference!r}")
    from openwan.demo import DEMO_V1_SAMPLE, world
    from openwan.training.data import InMemoryLatentDataset
    data = torch.load(latents_file, map_location="cpu", weights_only=False)
    rng = np.random.default_rng([seed, 5])
    text = data["text"]
    still = data.get("last_still")
    frames = data.get("frames", DEMO_V1_SAMPLE.frame_num)      # (files of the first recipe do not say)
    if reference and "ref" not in data:
        raise ValueError(f"{latents_file} has no reference pictures: encode it with --stage latents --ref K")
    items = []
    for i, (z, caps) in enumerate(zip(data["latents"], data["captions"])):
        attrs = data["attributes"][i]
        classic = all(a[2] in world.CLASSIC_MOTIONS for a in attrs)
        if not {"all": True, "classic": classic, "one-object": len(attrs) == 1,
                "one-object-classic": classic and len(attrs) == 1,
                "one-object-looping": not classic and len(attrs) == 1}[subset]:
            continue
        for win, mid in windows(z, frames):
            if (windows_kept == "mid" and not mid) or (reference and mid):
                continue
            if reference:
                win = torch.cat([data["ref"][i], win], dim=1)
            for c in ([] if reference == "look-free" else caps) + (data["ref_captions"][i] if reference else []):
                ctx = text[""] if rng.random() < caption_dropout else text[c]
                item = {"latent": win, "context": ctx}
                if still is not None and not reference:
                    item.update(mid=torch.tensor(mid), last_still=still[i])
                items.append(item)
    return InMemoryLatentDataset(items), data
