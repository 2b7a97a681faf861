"""base_model_precision int8-torchao / fp8-torchao: torchao weights in the transformer blocks, LoRA on top.

Everything runs the real pieces on the CPU: torchao's int8 / float8 tensors, PEFT's torchao LoRA layer,
hvtui's FP8 matmul (`torch._scaled_mm` has CPU kernels, so its maths is checked here; the trainer itself
refuses fp8 on a CPU, see the doctor tests), offload, compiled blocks, saving, and the trainer end to end.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from hvtui.core.env import doctor_system as S
from hvtui.core.env.nvml import GpuSample, NvmlInfo
from hvtui.core.preset.schema import Preset, load_preset
from hvtui.core.train import lora, quantize, step, tiny
from hvtui.core.train.quantized_linear import QuantizedLinear, float8_linear, rowwise_fp8
from tests.helpers import loop_presets as L
from tests.helpers.lora_training import batch as _batch
from tests.helpers.lora_training import train

PRESET = Preset(pretrained_model_name_or_path="builtin:tiny", lora_rank=4, gradient_checkpointing=True,
                mixed_precision="no")
# fp8 compute on the CPU (tests only: the trainer asks for a GPU with FP8 tensor cores)
MODES = [("int8-torchao", None), ("fp8-torchao", True)]


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return tiny.tiny_transformer("t2v", num_layers=3)


def _quantized(base, mode, fp8_compute=None):
    tr = copy.deepcopy(base)
    report = quantize.quantize_transformer(tr, mode, "cpu", fp8_compute=fp8_compute)
    return tr, report


def _train(tr, steps=4, lr=1e-2, **speed_kw):
    return train(tr, PRESET, steps, lr=lr, **speed_kw)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode, fp8_compute", MODES)
def test_block_linears_become_torchao_tensors_and_the_rest_stays(base, mode, fp8_compute):
    from torchao.quantization import Float8Tensor, Int8Tensor

    tr, report = _quantized(base, mode, fp8_compute)
    kind, dtype = (Int8Tensor, torch.int8) if mode == "int8-torchao" else (Float8Tensor, torch.float8_e4m3fn)
    linears = [(n, m) for n, m in tr.transformer_blocks.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == report.linears == 3 * 14
    for name, m in linears:
        assert type(m) is QuantizedLinear, name
        assert isinstance(m.weight, kind) and m.weight.qdata.dtype == dtype and not m.weight.requires_grad
        assert m.weight.scale.shape == (m.out_features, 1)            # one scale per output channel
    # the video-stream linears run FP8 matmuls, the text stream and the modulation dequantize
    fp8 = sorted(n.split(".", 1)[1] for n, m in linears if m.fp8_compute)
    assert fp8 == (sorted(quantize.FP8_COMPUTE_LINEARS * 3) if fp8_compute else [])
    assert report.fp8_compute == len(fp8)
    # outside the blocks nothing changed
    for name in ("x_embedder.proj.weight", "context_embedder.proj_in.weight", "proj_out.weight"):
        assert torch.equal(tr.get_parameter(name), base.get_parameter(name)), name
    # 1 byte per weight + a 4-byte scale per row, against fp32's 4 bytes per weight
    assert report.bytes_after < 0.3 * report.bytes_before
    assert f"to {mode} on cpu in" in report.line()
    # and the model computes nearly what it did
    batch, noise = _batch(0), torch.randn(1, 32, 2, 4, 6)
    with torch.no_grad():
        ref = step.flow_matching_loss(base, batch, torch.tensor([0.5]), noise, return_pred=True)[1]
        got = step.flow_matching_loss(tr, batch, torch.tensor([0.5]), noise, return_pred=True)[1]
    assert _rel(got, ref) < (0.01 if mode == "int8-torchao" else 0.05)


def test_float8_matmul_forward_and_input_gradient():
    torch.manual_seed(0)
    w = torch.randn(48, 64)
    q, s = rowwise_fp8(w)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (48, 1)
    assert _rel(q.float() * s, w) < 0.03
    bias = torch.randn(48)
    x = torch.randn(2, 5, 64)
    x[0, 0] = 0.0                                    # an all-zero row: finite, not 0/0
    x = x.requires_grad_()
    y = float8_linear(x, q, s, bias)
    grad = torch.randn(2, 5, 48)
    y.backward(grad)
    xr = x.detach().clone().requires_grad_()
    yr = torch.nn.functional.linear(xr, q.float() * s, bias)
    yr.backward(grad)
    assert y.shape == (2, 5, 48) and y.dtype == torch.float32
    assert _rel(y, yr) < 0.05 and _rel(x.grad, xr.grad) < 0.05
    assert torch.isfinite(x.grad).all() and torch.allclose(y[0, 0], bias, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):   # answers in the autocast dtype, like a Linear
        assert float8_linear(x, q, s).dtype == torch.bfloat16


@pytest.mark.parametrize("mode, fp8_compute", MODES)
def test_lora_on_a_quantized_base_trains_through_its_input_gradients(base, mode, fp8_compute):
    from peft.tuners.lora.torchao import TorchaoLoraLinear

    ref_losses, ref_sd, _ = _train(copy.deepcopy(base))
    tr, _ = _quantized(base, mode, fp8_compute)
    losses, sd, _ = _train(tr)
    layer = tr.transformer_blocks[0].attn.to_q
    assert isinstance(layer, TorchaoLoraLinear) and type(layer.base_layer) is QuantizedLinear
    assert all(v.dtype == torch.float32 for v in sd.values())         # the LoRA stays full precision
    assert all(math.isfinite(v) for v in losses)
    # block 0's LoRA only learns through the frozen quantized blocks after it (their input gradients)
    a0 = "transformer_blocks.0.attn.to_q.lora_A.weight"
    torch.manual_seed(1)
    init = {k: v.clone() for k, v in lora.lora_state_dict(lora_fresh(base)).items()}
    assert (sd[a0] - init[a0]).abs().max() > 1e-4
    # and it learns what the unquantized model learns, up to the rounding of the base
    delta = torch.cat([(sd[k] - init[k]).flatten() for k in sd])
    ref_delta = torch.cat([(ref_sd[k] - init[k]).flatten() for k in sd])
    assert _rel(delta, ref_delta) < (0.1 if mode == "int8-torchao" else 0.35)   # after 4 AdamW steps
    assert losses == pytest.approx(ref_losses, rel=0.02)


@pytest.mark.parametrize("mode, fp8_compute", MODES)
def test_lora_gradients_through_the_quantized_base_match(base, mode, fp8_compute):
    """One backward pass from the same LoRA: block 0's LoRA gradient crosses every later block's quantized
    matmuls backwards (input gradients); it matches the unquantized model's up to the base's rounding."""
    def grads(tr):
        torch.manual_seed(1)
        params = lora.add_lora(tr, PRESET)
        with torch.no_grad():   # a LoRA that is not zero, so every LoRA tensor gets a gradient
            for p in params:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        batch = _batch(0)
        loss = step.flow_matching_loss(tr, batch, torch.tensor([0.6]), torch.randn(1, 32, 2, 4, 6,
                                       generator=torch.Generator().manual_seed(2)))
        loss.backward()
        return {n: p.grad for n, p in tr.named_parameters() if p.requires_grad}

    ref = grads(copy.deepcopy(base))
    got = grads(_quantized(base, mode, fp8_compute)[0])
    first = [k for k in ref if k.startswith("transformer_blocks.0.attn.to_q")]
    assert first and all(ref[k].abs().max() > 0 for k in first)
    # e4m3 keeps 3 mantissa bits: a few % per matmul, more on the tiny text-stream gradients
    limit, overall = (0.03, 0.02) if mode == "int8-torchao" else (0.25, 0.1)
    live = [k for k in ref if ref[k] is not None]
    assert _rel(torch.cat([got[k].flatten() for k in live]), torch.cat([ref[k].flatten() for k in live])) < overall
    for k in ref:
        if ref[k] is None or not ref[k].abs().max() > 0:   # the last block's text-side LoRA (trap 2)
            assert got[k] is None or not got[k].abs().max() > 0, k
            continue
        assert _rel(got[k], ref[k]) < limit, (k, _rel(got[k], ref[k]))


def lora_fresh(base):
    tr = copy.deepcopy(base)
    lora.add_lora(tr, PRESET)
    return tr


def test_offload_streams_the_quantized_bytes_and_trains_the_same(base):
    tr, _ = _quantized(base, "int8-torchao")
    plain_losses, plain_sd, _ = _train(tr)
    tr, report = _quantized(base, "int8-torchao")
    losses, sd, handle = _train(tr, offload=True, attention_cache_share=0.0)
    st = handle.stats()
    # what streams is int8 data + scales (+ the blocks' biases and norms), not the fp32 weights
    streamed = sum(b.nbytes for b in handle.offloader.blocks)
    frozen = sum(quantize.tensor_bytes(p) for p in tr.transformer_blocks.parameters() if not p.requires_grad)
    fp32_blocks = sum(p.numel() * 4 for p in base.transformer_blocks.parameters())
    assert report.bytes_after < streamed == frozen < 0.4 * fp32_blocks
    assert st["host_bytes"] >= streamed
    assert st["h2d_bytes"] > 0
    assert losses == plain_losses and all(torch.equal(sd[k], plain_sd[k]) for k in sd)
    w = tr.transformer_blocks[2].ff.net[2].weight
    handle.remove()                                   # every weight back in place, still int8
    assert w.qdata.dtype == torch.int8 and w.qdata.stride() == (w.shape[1], 1)


@pytest.mark.slow
@pytest.mark.parametrize("mode, fp8_compute", MODES)
def test_compiled_quantized_blocks_match_eager(base, mode, fp8_compute):
    """Dynamo + AOTAutograd over torchao tensors and the FP8 autograd function, with gradient checkpointing:
    the checkpoint recompute must save what the forward saved (one graph set for every block)."""
    from torch._dynamo.utils import counters

    tr, _ = _quantized(base, mode, fp8_compute)
    ref_losses, ref_sd, _ = _train(tr, steps=3)
    torch._dynamo.reset()
    counters.clear()
    tr, _ = _quantized(base, mode, fp8_compute)
    losses, sd, handle = _train(tr, steps=3, compile_blocks=True, compile_options={"backend": "aot_eager"})
    assert handle.stats()["compiled_blocks"]
    assert 0 < counters["stats"]["unique_graphs"] <= 6
    assert losses == pytest.approx(ref_losses, rel=1e-4)
    assert max((sd[k] - ref_sd[k]).abs().max().item() for k in sd) < 1e-4
    handle.remove()
    torch._dynamo.reset()


def test_lora_trained_on_int8_loads_onto_the_unquantized_model(base, tmp_path):
    tr, _ = _quantized(base, "int8-torchao")
    _train(tr, steps=3)
    lora.save_lora(tr, tmp_path)
    plain = copy.deepcopy(base)
    plain.load_lora_adapter(str(tmp_path / lora.LORA_FILE), prefix="transformer", adapter_name="default")
    batch, noise, s = _batch(5), torch.randn(1, 32, 2, 4, 6), torch.tensor([0.4])
    with torch.no_grad():
        pred = lambda m: step.flow_matching_loss(m, batch, s, noise, return_pred=True)[1]   # noqa: E731
        bare, on_plain, on_int8 = pred(base), pred(plain), pred(tr)
        tr.disable_adapters()
        int8_bare = pred(tr)
    assert _rel(on_plain, bare) > 1e-3                           # the LoRA does something on the fp32 model
    assert _rel(on_plain - bare, on_int8 - int8_bare) < 0.05     # ... what it did on the quantized one


def test_fp8_without_fp8_hardware_is_refused_with_the_alternative(base):
    tr = copy.deepcopy(base)
    with pytest.raises(quantize.QuantizationError) as e:
        quantize.quantize_transformer(tr, "fp8-torchao", "cpu")
    assert "no CUDA GPU" in e.value.message and '"int8-torchao"' in e.value.hint
    assert quantize.fp8_hardware_problem([("NVIDIA A100", (8, 0))]).startswith("NVIDIA A100 (compute capability 8.0)")
    assert quantize.fp8_hardware_problem([("NVIDIA H200", (9, 0)), ("NVIDIA L4", (8, 9))]) is None


# ------------------------------------------------------------------------------------------ doctor
def _gpu(name, capability):
    return NvmlInfo(True, "", "580.1", "13.0", [GpuSample(0, name, "GPU-1", 0, 80 << 30, 80 << 30,
                                                          capability=capability)])


NO_GPU = NvmlInfo(False, "no GPU: the NVIDIA driver library (libnvidia-ml) was not found")
HAVE = {"torchao": "0.18.0", "torch": "2.11.0+cu130"}


@pytest.mark.parametrize("mode, info, versions, status, words", [
    ("fp8-torchao", NO_GPU, HAVE, "fail", ["no CUDA GPU", '"int8-torchao"']),
    ("fp8-torchao", _gpu("NVIDIA A100-SXM4-80GB", (8, 0)), HAVE, "fail", ["compute capability 8.0", "int8-torchao"]),
    ("fp8-torchao", _gpu("NVIDIA H200", (9, 0)), HAVE, "ok", ["FP8 matmuls on NVIDIA H200"]),
    ("fp8-torchao", _gpu("NVIDIA L4", None), HAVE, "warn", ["unknown"]),
    ("int8-torchao", NO_GPU, HAVE, "ok", ["on the CPU"]),
    ("int8-torchao", NO_GPU, {"torchao": None, "torch": "2.13.0"}, "fail", ["not installed", "pip install"]),
    ("int8-torchao", NO_GPU, {"torchao": "0.13.0", "torch": "2.8.0"}, "fail", ["torchao >= 0.18"]),
    ("int8-torchao", NO_GPU, {"torchao": "0.18.0", "torch": "2.9.1"}, "fail", ["torch >= 2.11"]),
])
def test_doctor_checks_the_base_precision(mode, info, versions, status, words):
    [c] = S.check_base_precision(Preset(base_model_precision=mode), info, versions)
    assert c.status == status
    text = c.detail + " " + c.hint
    for w in words:
        assert w in text, text
    assert S.check_base_precision(Preset(base_model_precision="bf16"), info, versions) == []


def test_fp8_demo_passes_check_and_fails_doctor_on_the_cpu(tmp_path):
    """`hvtui check` accepts fp8-torchao (a valid preset); `hvtui doctor` and `--run` refuse it here, before
    loading anything, naming int8-torchao."""
    src = (L.REPO / "presets" / "demo.toml").read_text()
    text = src.replace('base_model_precision = "no_change"', 'base_model_precision = "fp8-torchao"')
    text = text.replace('"../output/demo', f'"{tmp_path}/out')
    text = text.replace('"demo-data"', f'"{L.DEMO_DATA}"')
    assert text != src
    preset = tmp_path / "fp8.toml"
    preset.write_text(text)
    check = L.hvtui("check", preset)
    out, err = check.communicate(timeout=120)
    assert check.returncode == 0, out + err
    doctor = L.hvtui("doctor", preset, env={"CUDA_VISIBLE_DEVICES": ""})
    out, err = doctor.communicate(timeout=120)
    assert doctor.returncode == 3, out + err
    assert "base precision" in out and "int8-torchao" in out
    run = L.hvtui("--run", preset, env={"CUDA_VISIBLE_DEVICES": ""})
    out, err = run.communicate(timeout=300)
    assert run.returncode == 3, out + err
    assert "int8-torchao" in out + err and "Traceback" not in out + err
    assert "base precision: fp8-torchao" in out + err
    out_dir = tmp_path / "out"   # a refused start writes no run into output_dir (the demo's scan cache lives there)
    assert not out_dir.exists() or {p.name for p in out_dir.iterdir()} <= {"cache"}


def test_check_accepts_the_quantized_modes_and_names_the_torchao_one_for_quanto(tmp_path):
    from hvtui.core.preset.check import validate_file

    for value, ok in (("int8-torchao", True), ("fp8-torchao", True), ("int8-quanto", False)):
        p = tmp_path / f"{value}.toml"
        p.write_text(f'pretrained_model_name_or_path = "builtin:tiny"\nbase_model_precision = "{value}"\n'
                     f'output_dir = "{tmp_path}/out"\n')
        v = validate_file(p, env={})
        keys = [q.key for q in v.errors]
        assert ("base_model_precision" not in keys) == ok, v.errors
    assert 'did you mean "int8-torchao"' in str(v.errors[0])


def test_resuming_on_another_base_precision_is_a_change_of_meaning():
    from hvtui.core.train import checkpoint as ckpt

    changed, incompatible = ckpt.compare_summary({"base_model_precision": "int8-torchao"},
                                                 {"base_model_precision": "bf16"})
    assert changed == ["base_model_precision: int8-torchao -> bf16"] and incompatible == []


def test_config_form_offers_the_modes():
    from hvtui.tui.form import form_fields

    f = next(f for f in form_fields(Preset()) if f.name == "base_model_precision")
    assert f.choices == ("bf16", "no_change", "int8-torchao", "fp8-torchao")


# ------------------------------------------------------------------------------------------ the trainer
@pytest.mark.slow
def test_demo_trains_with_int8_and_its_lora_loads_onto_the_unquantized_model(tmp_path):
    """The acceptance run: the demo preset with int8-torchao, headless, on the CPU."""
    from hvtui.core.train.components import load_components

    src = (L.REPO / "presets" / "demo.toml").read_text()
    text = src.replace('base_model_precision = "no_change"', 'base_model_precision = "int8-torchao"')
    text = text.replace('"../output/demo', f'"{tmp_path}/out').replace('"demo-data"', f'"{L.DEMO_DATA}"')
    for key, value in (("max_train_steps", 40), ("validation_steps", 40), ("checkpointing_steps", 20)):
        text = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line for line in text.splitlines())
    preset = tmp_path / "int8.toml"
    preset.write_text(text + "\n")
    run = L.hvtui("--run", preset)
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, out + err
    events = L.read_events(tmp_path / "out")
    losses = [v for _, v in sorted(L.losses(events).items())]
    assert len(losses) == 40 and sum(losses[-10:]) < 0.95 * sum(losses[:10])   # the loss falls
    logs = [e.get("message", "") for e in events if e.kind == "log"]
    assert any(m.startswith("quantized 28 linear layers of 2 transformer blocks to int8-torchao") for m in logs)
    assert any(e.kind == "sample" for e in events)                            # validation sampled
    lora_file = tmp_path / "out" / lora.LORA_FILE
    unquantized = dataclasses.replace(load_preset(preset), base_model_precision="no_change")
    plain = load_components(unquantized, "cpu", parts=("transformer",))["transformer"]
    bare = copy.deepcopy(plain)
    plain.load_lora_adapter(str(lora_file), prefix="transformer", adapter_name="default")
    batch, noise, s = _batch(3), torch.randn(1, 32, 2, 4, 6), torch.tensor([0.5])
    with torch.no_grad():
        a = step.flow_matching_loss(bare, batch, s, noise, return_pred=True)[1]
        b = step.flow_matching_loss(plain, batch, s, noise, return_pred=True)[1]
    assert _rel(b, a) > 1e-3



def _session(preset_path, resume=None):
    from hvtui.core.run.session import RunOptions, Session

    s = Session(load_preset(preset_path), options=RunOptions(resume=resume))
    s.start()
    s.join()
    return s.exit_code


@pytest.mark.slow
def test_int8_run_resumes_like_an_uninterrupted_one(tmp_path, clips):
    """The base is quantized again on resume (deterministically): the resumed losses repeat the full run's."""
    data, cache = clips
    kw = dict(base_model_precision="int8-torchao", gradient_checkpointing=True, checkpointing_steps=3)
    full = L.write_preset(tmp_path / "full.toml", data, cache, tmp_path / "full", max_train_steps=6, **kw)
    assert _session(full) == 0
    expected = L.losses(L.read_events(tmp_path / "full"))
    part = L.write_preset(tmp_path / "part.toml", data, cache, tmp_path / "part", max_train_steps=3, **kw)
    assert _session(part) == 0
    more = L.write_preset(tmp_path / "part.toml", data, cache, tmp_path / "part", max_train_steps=6, **kw)
    assert _session(more, resume="auto") == 0
    got = L.losses(L.read_events(tmp_path / "part"))
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for k in (4, 5, 6):
        assert got[k] == pytest.approx(expected[k], abs=1e-5), k


@pytest.mark.slow
def test_int8_data_parallel_matches_one_process_with_accumulation(tmp_path, clips):
    """2 CPU processes (gloo), each quantizing its own copy of the base, train the LoRA one process trains
    with gradient_accumulation_steps 2 (tests/core/train/test_distributed_run.py explains the equivalence)."""
    from safetensors.torch import load_file

    from hvtui.core.train import checkpoint as ckpt

    data, _ = clips
    kw = dict(base_model_precision="int8-torchao", max_train_steps=4, checkpointing_steps=4)
    single = L.write_preset(tmp_path / "one.toml", data, tmp_path / "c1", tmp_path / "one",
                            gradient_accumulation_steps=2, **kw)
    assert _session(single) == 0
    two = L.write_preset(tmp_path / "two.toml", data, tmp_path / "c2", tmp_path / "two", **kw)
    run = L.hvtui("--run", two, "--gpus", "2")
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, out + err
    expected, got = L.losses(L.read_events(tmp_path / "one")), L.losses(L.read_events(tmp_path / "two"))
    assert sorted(got) == [1, 2, 3, 4]
    for k, v in got.items():
        assert v == pytest.approx(expected[k], abs=1e-5), k
    state = lambda out: load_file(str(out / "checkpoints" / "checkpoint-000004" / ckpt.LORA_STATE_FILE))  # noqa: E731
    a, b = state(tmp_path / "one"), state(tmp_path / "two")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.slow
def test_fp8_that_gets_past_the_doctor_stops_with_exit_3_not_a_traceback(tmp_path, clips, monkeypatch):
    """If the doctor's answer was wrong (an unknown GPU), quantizing checks the FP8 matmul itself: the run
    ends with the doctor's exit code and the alternative, after caching, before training."""
    from hvtui.core.env import doctor

    monkeypatch.setattr(doctor, "run_doctor", lambda *a, **k: doctor.DoctorReport(None))
    data, cache = clips
    p = L.write_preset(tmp_path / "fp8.toml", data, cache, tmp_path / "fp8", base_model_precision="fp8-torchao")
    assert _session(p) == 3
    events = L.read_events(tmp_path / "fp8")
    errors = [e for e in events if e.kind == "error"]
    assert len(errors) == 1 and "no CUDA GPU" in errors[0].get("message") and "int8-torchao" in errors[0].get("hint")
    assert "traceback" not in errors[0].data and not any(e.kind == "step" for e in events)
