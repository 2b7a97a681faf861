"""The caching phase: text embeddings and latents on disk, keyed by content and by the settings that shape them.

Keys
- text entry: sha256 of (caption text, model identity + dtype, tokenizer lengths/crop). One file per distinct
  caption, shared by every clip that uses it; a changed caption re-encodes that caption only.
- latent entry: sha256 of (file path, size, mtime, frame indices, bucket W x H x F, fps, model identity +
  dtype, VAE tiling, t2v/i2v). Holds the posterior mean and std ([32, T, h, w]) and, for i2v, the first-frame
  cond ([33, T, h, w]) and SigLIP tokens ([N, Di]).
Files are safetensors written to a temp name and renamed, so an interrupted run never leaves half an entry;
they carry their key and a checksum, and are verified before they are trusted (cache_verify.py).

A clip whose frames cannot be decoded is dropped from the index with its reason (decode_failures.py); the
caller stops only when no sample is left.

Latent sampling: the cache stores mean + std instead of one sample (SimpleTuner stores a sample) so each load
can draw a fresh posterior sample from the trainer's generator (`load(entry, generator=g)`), keeping runs
reproducible and resumable; without a generator the mean is used.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hvtui.core.run import events
from hvtui.core.train import conditioning, decode_failures
from hvtui.core.train.components import free, make_pipeline

FORMAT = 1   # bump when what an entry holds changes


class CacheInterrupted(Exception):
    """A stop was requested while caching (finished entries stay on disk)."""


@dataclass
class CacheEntry:
    sample_id: str
    bucket_key: str
    latent_path: Path
    text_paths: list[Path]          # one per caption, same order as captions
    captions: list[str]
    i2v: bool = False
    repeats: int = 0
    dataset_id: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latent_path"] = str(self.latent_path)
        d["text_paths"] = [str(p) for p in self.text_paths]
        return d


@dataclass
class CacheIndex:
    entries: list[CacheEntry]
    text_dir: Path
    prompts: dict[str, Path] = field(default_factory=dict)   # validation prompts, negative prompt and ""
    stats: dict = field(default_factory=dict)                # encoded/reused counts of this build
    failed: dict[str, str] = field(default_factory=dict)     # sample id -> why its clip could not be decoded

    def load(self, entry: CacheEntry, generator: torch.Generator | None = None,
             caption_index: int | None = None, caption_dropout: float = 0.0) -> dict:
        """CPU tensors for `step.collate`: latents [32,T,H,W], cond [33,T,H,W] (i2v only), text [L,D],
        text_2 [L2,D2], image [N,Di] (N = 0 for t2v), sample_id, caption.

        With a generator: a posterior sample and a random caption (both drawn from it); else the mean and
        caption 0. `caption_dropout` swaps in the empty prompt with that probability (drawn from it too)."""
        lat = _read(entry.latent_path)
        if generator is not None:
            eps = torch.randn(lat["mean"].shape, generator=generator, dtype=torch.float32)
            latents = (lat["mean"].float() + lat["std"].float() * eps).to(lat["mean"].dtype)
        else:
            latents = lat["mean"]
        if caption_index is None:
            caption_index = (int(torch.randint(len(entry.captions), (1,), generator=generator))
                             if generator is not None and len(entry.captions) > 1 else 0)
        caption = entry.captions[caption_index]
        text_path = entry.text_paths[caption_index]
        if caption_dropout > 0 and float(torch.rand(1, generator=generator)) < caption_dropout:
            caption, text_path = "", self.prompts[""]
        text = _read(text_path)
        item = {"latents": latents, "text": text["text"], "text_2": text["text_2"],
                "sample_id": entry.sample_id, "caption": caption}
        if entry.i2v:
            item["cond"], item["image"] = lat["cond"], lat["image"]
        else:   # t2v: no image tokens (step.model_inputs sizes the empty tensor to the model)
            item["image"] = torch.zeros(0, 0, dtype=latents.dtype)
        return item

    def load_text(self, prompt: str) -> dict:
        """Cached embeddings of a validation prompt (or "" / the negative prompt)."""
        if prompt not in self.prompts:
            raise KeyError(f"prompt not cached: {prompt!r}")
        return _read(self.prompts[prompt])

    def first_frame(self, entry: CacheEntry):
        """The first frame of an i2v clip as cached (uint8 [H, W, 3]), for validation."""
        lat = _read(entry.latent_path)
        return lat["first_frame"].numpy() if "first_frame" in lat else None


def _read(path: Path) -> dict:
    """An entry's tensors, verified (CacheEntryDamaged names the file when they cannot be trusted)."""
    from hvtui.core.train.cache_verify import load

    return load(path)


def _write(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """Write an entry atomically. The temp name is made here, not by mkstemp, so the file gets the umask's
    mode (mkstemp's 0600 would stay). A refused write (full disk, read-only...) is a WriteFailure naming it."""
    from safetensors.torch import save_file

    from hvtui.core.file_mode import follow_umask
    from hvtui.core.train import write_guard
    from hvtui.core.train.cache_verify import NonFiniteEncoding, nonfinite, stamp

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    bad = nonfinite(tensors)
    if bad:   # an encoder's overflow, not damage: saying so here beats a "damaged entry" at every start
        raise NonFiniteEncoding((metadata or {}).get("path") or repr((metadata or {}).get("caption", "")), bad)
    tmp = path.parent / f".tmp-{path.stem}-{os.getpid()}-{os.urandom(3).hex()}.safetensors"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_guard.inject("cache", path)
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in stamp(path, tensors, metadata).items()})
        follow_umask(tmp)   # safetensors writes through a 0600 temp file of its own
        os.replace(tmp, path)
    except Exception as e:
        failure = write_guard.classify(e, path) if write_guard.is_write_error(e) else None
        if failure is None:
            raise
        raise failure from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def text_key(caption: str, model_key: str, pipe_settings: dict) -> str:
    return _hash({"kind": "text", "format": FORMAT, "caption": caption, "model": model_key, **pipe_settings})


def latent_key(sample, model_key: str, i2v: bool, tiling: bool, vision: str = "") -> str:
    try:
        st = Path(sample.path).stat()
        content = [st.st_size, st.st_mtime_ns]
    except OSError:
        content = None
    return _hash({"kind": "latents", "format": FORMAT, "path": str(Path(sample.path).resolve()),
                  "content": content, "frames": list(sample.frame_indices), "w": sample.width,
                  "h": sample.height, "f": sample.frames, "fps": sample.fps_out, "model": model_key,
                  "i2v": i2v, "vision": vision if i2v else "", "tiling": tiling,
                  "tile": conditioning.TILE_SAMPLE if tiling else 0})


def cache_dirs(preset) -> tuple[dict[str, Path], Path]:
    """(dataset id -> latent folder, text folder): the datasets' cache_dir, else OUTPUT_DIR/cache/..."""
    out = preset.resolve_path(preset.output_dir)
    latent = {d.id: (preset.resolve_path(d.cache_dir) if d.cache_dir else out / "cache" / d.id)
              for d in preset.training_datasets}
    text = [d for d in preset.datasets if d.dataset_type == "text_embeds" and not d.disabled and d.cache_dir]
    text = sorted(text, key=lambda d: not d.default)
    return latent, (preset.resolve_path(text[0].cache_dir) if text else out / "cache" / "text")


def text_settings(info) -> dict:
    """The pipeline settings that shape a text embedding: tokenizer lengths and template crop (the real
    pipeline's fixed values, or the tiny stand-ins'). Known without loading the encoders."""
    from hvtui.core.train import tiny

    if info.tiny:
        return {"max": tiny.TEXT_MAX_TOKENS, "max2": tiny.BYT5_MAX_TOKENS, "crop": "tiny-template"}
    return {"max": 1000, "max2": 256, "crop": 108}


@dataclass
class CachePlan:
    text_paths: dict[str, Path]          # caption -> file
    latent_paths: dict[str, Path]        # sample id -> file
    todo_text: list[str]
    todo_latents: list                   # samples
    prompts: list[str]
    samples: list
    failed: dict[str, str] = field(default_factory=dict)   # sample id -> reason: failed before with this decoder

    def shard(self, rank: int, world: int) -> CachePlan:
        """The share of the missing entries process `rank` of `world` encodes (data-parallel caching: every
        rank encodes its share, then all read the shared cache folders). The split is over all entries, not
        the missing ones, so it does not depend on when each rank looked (another rank may have written some)."""
        if world <= 1:
            return self
        todo_text, todo_ids = set(self.todo_text), {s.id for s in self.todo_latents}
        text = [c for i, c in enumerate(self.text_paths) if i % world == rank and c in todo_text]
        latents = [s for i, s in enumerate(self.samples) if i % world == rank and s.id in todo_ids]
        return CachePlan(self.text_paths, self.latent_paths, text, latents, self.prompts, self.samples, self.failed)

    @property
    def parts_needed(self) -> set[str]:
        """Which `load_components` parts caching needs ("text", "vae", "image")."""
        parts = {"text"} if self.todo_text else set()
        if self.todo_latents:
            parts.add("vae")
        return parts


def plan_cache(preset, report, info) -> CachePlan:
    """What is cached and what is not, from keys alone (no model loaded): lets the loop skip loading the
    text encoders when every caption is cached."""
    model_key = info.key()
    tiling = bool(preset.vae_enable_tiling)
    latent_dirs, text_dir = cache_dirs(preset)
    samples = [s for b in report.buckets for s in b.samples]
    prompts = list(dict.fromkeys([""] + list(preset.all_validation_prompts) + [preset.validation_negative_prompt]))
    captions = list(dict.fromkeys([c for s in samples for c in s.captions] + prompts))
    settings = dict(text_settings(info), encoder=str(preset.text_encoder_path or ""))
    text_paths = {c: text_dir / f"{text_key(c, model_key, settings)}.safetensors" for c in captions}
    out = preset.resolve_path(preset.output_dir)
    latent_paths = {}
    for s in samples:
        folder = latent_dirs.get(s.dataset_id) or out / "cache" / s.dataset_id
        key = latent_key(s, model_key, preset.is_i2v, tiling, str(preset.vision_encoder_path or ""))
        latent_paths[s.id] = folder / f"{key}.safetensors"
    todo, failed = [], {}
    for s in samples:
        if not latent_paths[s.id].is_file():
            reason = decode_failures.known(latent_paths[s.id])
            if reason is None:
                todo.append(s)
            else:
                failed[s.id] = reason
    return CachePlan(text_paths, latent_paths, [c for c in captions if not text_paths[c].is_file()],
                     todo, prompts, samples, failed)


def _stopped(control) -> bool:
    return bool(control is not None and getattr(control, "stop_requested", False))


def build_cache(preset, report, components: dict, device, publish=None, control=None, read_frames=None,
                free_encoders: bool = True, shard: tuple[int, int] = (0, 1),
                plan: CachePlan | None = None) -> CacheIndex:
    """Encode what is not cached yet; return the index of every sample in `report`.

    `shard` = (rank, world): encode only this process's share of what is missing (`CachePlan.shard`); the
    index still lists every entry, whose files exist once every rank has finished (the caller waits).

    `components` (from `load_components`) needs the parts `plan_cache(...).parts_needed` names: text for new
    captions, vae (+ image for i2v) for new clips. The text and image encoders are removed from it and their
    memory freed afterwards (`free_encoders`); the VAE stays (the validator decodes with it).
    `read_frames(sample)` defaults to the dataset module's reader (uint8 [F, H, W, 3]). `plan`: the caller's
    `plan_cache` result, when it already made one to decide which encoders to load (saves a second pass of
    file checks)."""
    if read_frames is None:
        from hvtui.core.dataset.read import read_sample_frames as read_frames
    publish = publish or (lambda ev: None)
    info = components["info"]
    dtype = info.dtype
    i2v = bool(preset.is_i2v)
    full = plan if plan is not None else plan_cache(preset, report, info)
    plan = full.shard(*shard)
    done = len(full.text_paths) + len(full.samples) - len(full.todo_text) - len(full.todo_latents)
    total = done + len(plan.todo_text) + len(plan.todo_latents)
    publish(events.progress("caching", done, total, f"{done} of {total} already cached"))

    if plan.todo_text:
        if components.get("text_encoder") is None:
            raise RuntimeError("new captions to cache but the text encoders were not loaded")
        pipe = make_pipeline(components, i2v=False)
        for c in plan.todo_text:
            if _stopped(control):
                raise CacheInterrupted("stop requested while caching text embeddings")
            emb = conditioning.encode_prompt(pipe, c, device, dtype)
            _write(plan.text_paths[c], emb, {"caption": c[:500]})
            done += 1
            publish(events.progress("caching", done, total, f"text: {c[:60]}"))
        del pipe
    if free_encoders:
        free(components, "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")

    failed = dict(plan.failed)
    for s in plan.samples:
        if s.id in plan.failed:
            decode_failures.add_to_report(report, s, plan.failed[s.id])
            publish(decode_failures.discarded(s, plan.failed[s.id], earlier=True))
    if plan.todo_latents:
        from hvtui.core.dataset.read import SampleReadError

        vae = components["vae"]
        conditioning.configure_tiling(vae, bool(preset.vae_enable_tiling))
        for s in plan.todo_latents:
            if _stopped(control):
                raise CacheInterrupted("stop requested while caching latents")
            try:
                frames = read_frames(s)
            except SampleReadError as e:     # bad data, not a bug: drop this sample, keep caching
                failed[s.id] = str(e)
                decode_failures.record(plan.latent_paths[s.id], s, str(e))
                decode_failures.add_to_report(report, s, str(e))
                publish(decode_failures.discarded(s, str(e)))
                done += 1
                publish(events.progress("caching", done, total, f"latents: {s.id} (discarded)"))
                continue
            enc = conditioning.encode_video(vae, frames, device, dtype)
            tensors = {"mean": enc["mean"], "std": enc["std"]}
            if i2v:
                tensors["cond"] = conditioning.encode_first_frame_cond(vae, frames[0], enc["mean"].shape[1],
                                                                       device, dtype)
                tensors["image"] = conditioning.encode_image_tokens(components["image_encoder"],
                                                                    components["feature_extractor"], frames[0],
                                                                    device).to(enc["mean"].dtype)
                tensors["first_frame"] = torch.from_numpy(frames[0].copy())
            _write(plan.latent_paths[s.id], tensors, {"sample_id": s.id, "path": str(s.path)})
            done += 1
            publish(events.progress("caching", done, total, f"latents: {s.id}"))
    if free_encoders:
        free(components, "image_encoder", "feature_extractor")

    entries = [CacheEntry(s.id, s.bucket_key, plan.latent_paths[s.id], [plan.text_paths[c] for c in s.captions],
                          list(s.captions), i2v, s.repeats, s.dataset_id) for s in plan.samples if s.id not in failed]
    _, text_dir = cache_dirs(preset)
    new_failures = len(failed) - len(plan.failed)
    stats = {"texts_encoded": len(plan.todo_text), "latents_encoded": len(plan.todo_latents) - new_failures,
             "texts_reused": len(full.text_paths) - len(full.todo_text),
             "latents_reused": len(full.samples) - len(full.todo_latents) - len(full.failed)}
    if failed:
        stats["latents_failed"] = len(failed)
    return CacheIndex(entries, text_dir, {p: plan.text_paths[p] for p in plan.prompts}, stats, failed)
