"""The caching phase of a run: load the model parts this process needs, encode what the plan says is missing
(latent_cache.py), and make sure every process ends it together.

The models load once, on the CPU; the transformer waits there while the encoders use the GPU for caching.
An entry on disk is used only when intact: a damaged one is deleted and encoded again (cache_verify.py).
Data-parallel: each rank encodes its share of the missing entries; every rank's failure or stop is agreed
before anyone reads the shared cache folders, and clips another process could not decode are settled
(decode_failures.py).
"""
from __future__ import annotations

import gc
from pathlib import Path

import torch

from hvtui.core.run import exitcodes
from hvtui.core.train.context import RunContext
from hvtui.core.train.failures import Abort, Stopped


def load_and_cache(ctx: RunContext, cache_plan, report):
    """The run's latent_cache.CacheIndex; the loaded components are left in ctx.components."""
    coll = ctx.coll
    error: Exception | None = None
    stopped, cache = False, None
    try:
        cache = _load_and_cache_share(ctx, cache_plan, report, (coll.rank, coll.world))
    except Stopped:
        stopped = True
    except Exception as e:   # raised below, after the other ranks know
        error = e
    if coll.distributed:
        failed, stopped_any = coll.sum([error is not None, stopped])
        if failed and error is None:
            raise Abort(exitcodes.TRAINING_FAILED, "another process failed while loading the model or "
                        "caching; its error is printed above (rank N)", "fix that error and run again")
        if 0 < failed < coll.world and isinstance(error, Abort):
            error.everywhere = False   # not every rank hit it: this one says it itself
        stopped = stopped or (stopped_any > 0 and error is None)
    if error is not None:
        raise error
    if stopped:
        raise Stopped()
    assert cache is not None
    if coll.distributed:
        _settle_across_processes(ctx, cache, report)
    ctx.log("cache: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in cache.stats.items()))
    if not cache.entries:
        from hvtui.core.train.decode_failures import describe

        failed = getattr(cache, "failed", None)
        if failed:
            raise Abort(exitcodes.INVALID, f"no usable training samples: every clip failed to decode: "
                        f"{describe(failed)}", "re-encode or replace these files (the events name each one)")
        raise Abort(exitcodes.INVALID, "the cache holds no samples", "hvtui buckets PRESET explains each clip")
    gc.collect()
    return cache


def _settle_across_processes(ctx: RunContext, cache, report) -> None:
    """Every process's counts, the clips another process could not decode, and every entry visible here."""
    from hvtui.core.train import decode_failures

    encoded = ctx.coll.sum([cache.stats.get("texts_encoded", 0), cache.stats.get("latents_encoded", 0)])
    cache.stats.update(texts_encoded=int(encoded[0]), latents_encoded=int(encoded[1]))
    decode_failures.settle(cache, {s.id: s for s in report.samples}, report, ctx.publish)
    missing = [e.latent_path for e in cache.entries if not Path(e.latent_path).is_file()]
    if missing:
        raise Abort(exitcodes.TRAINING_FAILED, f"{len(missing)} cache file(s) another process wrote are "
                    f"not visible here, e.g. {missing[0]}",
                    "with several hosts, output_dir and the datasets' cache_dir must be on a shared disk")


def _load_and_cache_share(ctx: RunContext, plan, report, shard: tuple[int, int]):
    from hvtui.core.train.cache_verify import CacheEntryDamaged, NonFiniteEncoding, drop_damaged
    from hvtui.core.train.components import ModelLoadError, load_components, model_info
    from hvtui.core.train.latent_cache import CacheInterrupted, build_cache, plan_cache

    p, device = ctx.preset, ctx.accelerator.device
    ctx.phase("loading", f"model {p.pretrained_model_name_or_path}")
    try:
        info = model_info(p)
        try:   # an entry on disk is used only when intact: a damaged one is deleted and encoded again
            damaged = drop_damaged(plan, p.is_i2v, info.dtype)
        except CacheEntryDamaged as e:   # damaged, and its folder does not let it be deleted
            raise Abort(exitcodes.INVALID, str(e),
                        "delete that file (or make its folder writable) and run again") from None
        for line in damaged:
            ctx.log(line, "warning")
        if damaged:
            plan = plan_cache(p, report, info)
        mine = plan.shard(*shard)   # the encoders this process needs for its share
        parts = {"transformer"} | set(mine.parts_needed)
        if mine.todo_latents and p.is_i2v:
            parts.add("image")
        if p.validation_steps and p.all_validation_prompts:
            parts.add("vae")   # the validator decodes with it
        comps = load_components(p, device=None, parts=tuple(sorted(parts)), publish=ctx.publish)
        for name, module in comps.items():
            if name != "transformer" and isinstance(module, torch.nn.Module):
                module.to(device)
    except ModelLoadError as e:
        raise Abort(exitcodes.TRAINING_FAILED, f"cannot load the model: {e.message}", e.hint) from None
    ctx.components = comps
    share = f" (this process: {len(mine.todo_latents)} and {len(mine.todo_text)})" if shard[1] > 1 else ""
    ctx.phase("caching", f"{len(plan.todo_latents)} clips and {len(plan.todo_text)} captions to encode{share}")
    try:
        return build_cache(p, report, comps, device, ctx.publish, ctx.control, shard=shard, plan=plan)
    except CacheInterrupted:
        raise Stopped() from None
    except NonFiniteEncoding as e:
        raise Abort(exitcodes.TRAINING_FAILED, str(e), "check that clip (hvtui buckets PRESET), or encode in "
                    "bf16 / fp32 (base_model_precision, mixed_precision): fp16 overflows") from None
