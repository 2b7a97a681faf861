"""Validation samples: the real HunyuanVideo 1.5 pipeline, the training transformer with its LoRA active, the
prompts' cached embeddings (the text encoders are gone by now), an mp4 written with PyAV.

Every conditioning token the validator passes is valid (cached valid tokens, 0 image tokens for t2v, the
SigLIP tokens for i2v), so sampling runs in packed attention (no mask) like training at batch 1. The pipeline's
`encode_prompt` would reshape 0-length byT5 embeddings with a -1 (an error), so the pipeline subclasses below
pass the cached tensors through; for i2v `encode_image` returns the cached SigLIP tokens of the clip whose
first frame conditions the sample.

Guidance, step count and flow shift follow the checkpoint (hvtui.core.samples.sampling): CFG-distilled checkpoints
sample without CFG (one transformer call per step, no negative prompt) unless the preset sets a guidance.

Memory: sampling runs on the card the training filled, so it must stay under the training peak. diffusers'
guider already runs the conditional and unconditional passes one after the other at batch 1 (never a batch of 2);
the allocator's cache of training-sized blocks is given back first, the denoising loop stops at latents, its
buffers are given back, and only then the VAE decodes (spatially tiled with vae_enable_tiling), so the decode
never stacks on the transformer's working set. The estimate of this phase is hvtui.core.env.fit's "validation".

Each mp4 gets a contact sheet (contact_sheet.py) beside it, named in the sample event (`sheet`).

A failure or OOM raises `ValidationError` (memory is freed first). `ValidationSamples` is what the loop calls at
its validation steps: rank 0 samples, a failure is a warning and training goes on, except when the disk refused
the mp4 (the run then stops at the next step boundary, as for any write failure).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import torch

from hvtui.core.run import events
from hvtui.core.train import conditioning, packed_attention, write_guard
from hvtui.core.train.components import make_pipeline, release_memory
from hvtui.core.train.video_io import write_mp4


class ValidationError(Exception):
    def __init__(self, message: str, hint: str = "", oom: bool = False):
        super().__init__(message)
        self.message, self.hint, self.oom = message, hint, oom


def _pipeline_classes():
    from diffusers import HunyuanVideo15ImageToVideoPipeline, HunyuanVideo15Pipeline

    def cached_encode_prompt(self, prompt=None, device=None, dtype=None, batch_size=1, num_videos_per_prompt=1,
                      prompt_embeds=None, prompt_embeds_mask=None, prompt_embeds_2=None, prompt_embeds_mask_2=None):
        if prompt_embeds is None or prompt_embeds_2 is None:
            raise ValueError("the validator passes cached embeddings only")
        return tuple(t.to(device=device, dtype=dtype) for t in
                     (prompt_embeds, prompt_embeds_mask, prompt_embeds_2, prompt_embeds_mask_2))

    class CachedT2V(HunyuanVideo15Pipeline):
        encode_prompt = cached_encode_prompt

    class CachedI2V(HunyuanVideo15ImageToVideoPipeline):
        encode_prompt = cached_encode_prompt
        cached_image_embeds: torch.Tensor | None = None

        def encode_image(self, image, batch_size, device, dtype):
            assert self.cached_image_embeds is not None   # the validator sets it before sampling
            return self.cached_image_embeds.to(device=device, dtype=dtype).expand(batch_size, -1, -1)
    return CachedT2V, CachedI2V


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in str(text).lower().split("x"))
    except ValueError:
        raise ValidationError(f"validation_resolution {text!r} is not WxH", "write it like \"848x480\"") from None
    return w, h


class Validator:
    """`Validator(preset, components, index, device).run(transformer, step) -> [mp4 paths]`.

    `components` are `load_components`' (the VAE and scheduler are used; encoders may be gone); `index` is the
    `CacheIndex` holding the prompts' embeddings (and, for i2v, the clips' first frames + SigLIP tokens)."""

    def __init__(self, preset, components: dict, index, device, output_dir: Path | None = None, publish=None,
                 fps: float | None = None):
        self.preset, self.components, self.index, self.device = preset, components, index, device
        self.output_dir = Path(output_dir or preset.resolve_path(preset.output_dir)) / "samples"
        self.publish = publish or (lambda ev: None)
        frame_rates = [d.video.frame_rate for d in preset.training_datasets if d.video.frame_rate]
        self.fps = fps or (frame_rates[0] if frame_rates else 24.0)
        self.i2v = bool(preset.is_i2v)
        from hvtui.core.samples.sampling import sampling_settings

        self.settings = sampling_settings(preset)
        self.publish(events.log(f"validation sampling: {self.settings.describe()}"))
        if self.settings.warning():
            self.publish(events.log(self.settings.warning(), "warning"))

    @property
    def prompts(self) -> list[str]:
        return self.preset.all_validation_prompts

    def _embeds(self, prompt: str, device) -> dict:
        t = self.index.load_text(prompt)
        text, text_2 = t["text"][None].to(device), t["text_2"][None].to(device)
        ones = lambda x: torch.ones(x.shape[:2], dtype=torch.int64, device=device)   # noqa: E731
        return dict(prompt_embeds=text, prompt_embeds_mask=ones(text), prompt_embeds_2=text_2,
                    prompt_embeds_mask_2=ones(text_2))

    def _pipeline(self, transformer):
        from diffusers import ClassifierFreeGuidance

        t2v_cls, i2v_cls = _pipeline_classes()
        comps = dict(self.components)
        comps["transformer"] = transformer
        comps["scheduler"] = copy.deepcopy(self.components["scheduler"])   # the pipeline sets its timesteps
        comps["guider"] = ClassifierFreeGuidance(guidance_scale=float(self.settings.guidance))
        for name in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "image_encoder"):
            comps[name] = None
        pipe = make_pipeline(comps, i2v=self.i2v, pipeline_cls=i2v_cls if self.i2v else t2v_cls)
        pipe.vision_num_semantic_tokens = 0   # t2v: no image tokens at all (the model ignores zeroed ones)
        return pipe

    def run(self, transformer, step: int) -> list[Path]:
        if not self.prompts:
            return []
        model = getattr(transformer, "module", transformer)
        was_training = model.training
        model.eval()
        try:
            return self._run(model, step)
        except torch.OutOfMemoryError as e:
            release_memory()
            raise ValidationError(f"validation sample at step {step} ran out of GPU memory ({e})",
                                  "lower validation_resolution / validation_num_video_frames", oom=True) from None
        except ValidationError:
            raise
        except Exception as e:   # any sampling failure is reported, training goes on
            raise ValidationError(f"validation sample at step {step} failed: {type(e).__name__}: {e}",
                                  "training continues; the traceback is in the log") from e
        finally:
            if was_training:
                model.train()

    def _run(self, model, step: int) -> list[Path]:
        release_memory()   # the allocator's cached training blocks go back before sampling allocates its own
        pipe = self._pipeline(model)
        with visiting(pipe.vae, self.device):
            return self._sample_all(model, pipe, step)

    def _sample_all(self, model, pipe, step: int) -> list[Path]:
        paths = []
        for i, prompt in enumerate(self.prompts):
            frames = self.sample_frames(model, i, pipe)
            path = self.output_dir / f"step{step:06d}-{i}.mp4"
            write_mp4(frames, path, fps=self.fps)
            paths.append(path)
            data = {"step": step, "path": str(path), "prompt": prompt, "index": i}
            sheet = self._contact_sheet(frames, path)
            if sheet is not None:
                data["sheet"] = str(sheet)
            self.publish(events.Event("sample", data))
        return paths

    def _contact_sheet(self, frames, video: Path) -> Path | None:
        """The PNG grid beside the mp4 (what the TUI preview and the trackers show). The video is the sample:
        a sheet that cannot be written (full disk) is a warning."""
        from hvtui.core.samples.contact_sheet import sheet_path_for, write_contact_sheet

        try:
            return write_contact_sheet(frames, sheet_path_for(video))
        except (OSError, ValueError) as e:
            self.publish(events.log(f"contact sheet for {video.name} not written: {e}", "warning"))
            return None

    @torch.no_grad()
    def sample_frames(self, model, i: int = 0, pipe=None):
        """Frames [F, H, W, 3] in [0, 1] for validation prompt i (seed validation_seed + i)."""
        from PIL import Image

        p = self.preset
        model = getattr(model, "module", model)
        pipe = pipe or self._pipeline(model)
        conditioning.configure_tiling(pipe.vae, bool(p.vae_enable_tiling))
        kw = self._embeds(self.prompts[i], self.device)
        if self.settings.uses_cfg:
            neg = self._embeds(p.validation_negative_prompt, self.device)
            kw.update({f"negative_{k}": v for k, v in neg.items()})
        common = dict(num_frames=int(p.validation_num_video_frames), num_inference_steps=self.settings.steps,
                      generator=torch.Generator().manual_seed(int(p.validation_seed) + i), output_type="latent",
                      **kw)
        with packed_attention.packed_attention(model, True):
            if self.i2v:
                entries = [e for e in self.index.entries if e.i2v]
                if not entries:
                    raise ValidationError("i2v validation needs a cached training clip for its first frame")
                entry = entries[i % len(entries)]
                pipe.cached_image_embeds = self.index.load(entry)["image"][None]
                latents = pipe(image=Image.fromarray(self.index.first_frame(entry)), **common).frames
            else:
                width, height = parse_resolution(p.validation_resolution)
                latents = pipe(height=height, width=width, **common).frames
        release_memory()   # the denoising loop's buffers go back before the decode allocates
        return decode(pipe, latents)[0]


class ValidationSamples:
    """The loop's validation samples: `take()` samples every validation prompt with the model as it is now
    (`unwrapped()`: the LoRA-carrying transformer) and publishes a sample event per video; `index` is the
    run's latent_cache.CacheIndex (the prompts' embeddings)."""

    def __init__(self, ctx, progress, index, unwrapped):
        self.ctx, self.progress, self.index, self.unwrapped = ctx, progress, index, unwrapped
        self.validator: Validator | None = None

    def take(self, then: str | None = "training") -> None:
        """Sample the validation prompts now (rank 0). A failure is a warning; training goes on.
        `then`: the phase to announce afterwards."""
        ctx, step = self.ctx, self.progress.step
        if not ctx.is_main or not ctx.preset.all_validation_prompts or "vae" not in ctx.components:
            return
        self.progress.last_validated_step = step
        ctx.phase("validating", f"step {step}")
        try:
            if self.validator is None:
                self.validator = Validator(ctx.preset, ctx.components, self.index, ctx.accelerator.device,
                                           output_dir=ctx.out, publish=ctx.publish)
            self.validator.run(self.unwrapped(), step)   # publishes a sample event per video
        except ValidationError as e:
            failure = write_guard.classify(e.__cause__, ctx.out / "samples", at_write_site=False) \
                if e.__cause__ is not None else None
            if failure is not None:   # the disk refused the mp4: the next checkpoint would fail too
                ctx.writes.report(failure)
            ctx.log(f"{e.message}; " + ("stopping" if failure else "training goes on")
                    + (f" ({e.hint})" if e.hint else ""), "warning")
        finally:
            release_memory()
            self.unwrapped().train()
        if then:
            ctx.phase(then, "")


def park(vae) -> None:
    """Between samples the VAE waits in host memory: training never uses it, and on a 24 GB card its 2.4 GiB
    are what the training step needs most. `visiting` brings it to the GPU for one validation."""
    if vae is not None and next(vae.parameters()).device.type == "cuda":
        vae.to("cpu")
        release_memory()


@contextmanager
def visiting(vae, device):
    """The VAE on `device` for the validation (the i2v pipeline encodes the condition frame with it, every
    pipeline decodes with it), and back where it was afterwards (host memory while training)."""
    home = next(vae.parameters()).device
    if home == torch.device(device):
        yield
        return
    vae.to(device)
    try:
        yield
    finally:
        vae.to(home)
        release_memory()


@torch.no_grad()
def decode(pipe, latents):
    """The pipeline's own decode step (scale, VAE decode, post-process to [0, 1] numpy frames [B, F, H, W, 3])."""
    vae = pipe.vae
    video = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="np")
