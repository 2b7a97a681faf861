"""`hvtui doctor`: each check's status and message on whole and broken model folders, system checks, the CLI."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from hvtui.core.env import doctor as D
from hvtui.core.env import doctor_report as R
from hvtui.core.env import doctor_system as S
from hvtui.core.env.assets import ENV_TEXT
from hvtui.core.env.nvml import GpuSample, NvmlInfo
from hvtui.core.preset.schema import DatasetSpec, Preset
from tests.helpers.doctor_trees import copy_tree
from tests.helpers.repo_paths import REPO as ROOT

NO_GPU = NvmlInfo(False, "no GPU: the NVIDIA driver library (libnvidia-ml) was not found")
GiB = 1024 ** 3


def gpu(total_gib, free_gib=None, name="NVIDIA H100 80GB HBM3", cuda="12.8"):
    free = total_gib if free_gib is None else free_gib
    return NvmlInfo(True, "", "570.86", cuda, [GpuSample(0, name, "GPU-abc", int((total_gib - free) * GiB),
                                                         int(total_gib * GiB), int(free * GiB), 0.0, 40.0, 70.0)])



def doctor(tmp_path, root, flavour="t2v-480p", env=None, info=None, **kw):
    (tmp_path / "clips").mkdir(exist_ok=True)
    kw.setdefault("datasets", [DatasetSpec(id="clips", instance_data_dir=str(tmp_path / "clips"))])
    preset = Preset(pretrained_model_name_or_path=str(root), model_flavour=flavour,
                    output_dir=str(tmp_path / "out"), **kw)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), **(env or {})}
    return D.run_doctor(preset, env=env, gpu=info or gpu(80), scan=False)


def status(report, name):
    c = report.get(name)
    assert c is not None, f"no check {name!r}: {[x.name for x in report.checks]}"
    return c.status, c.detail


def model_fails(report):
    return [(c.name, c.detail) for c in report.checks if c.group == "model" and c.status == "fail"]


# ------------------------------------------------------------------------------------------ whole trees

@pytest.mark.slow
def test_diffusers_tree_passes(model_trees, tmp_path):
    r = doctor(tmp_path, model_trees["diffusers"], "i2v-480p")
    assert model_fails(r) == []
    assert status(r, "transformer config") == ("ok", "HunyuanVideo15Transformer3DModel")
    st, detail = status(r, "transformer weights")
    assert st == "ok" and "fp32" in detail and "shards" in detail            # dtype and shard count reported
    assert status(r, "text_encoder config") == ("ok", "Qwen2_5_VLTextModel")
    assert status(r, "tokenizer files")[1].startswith("Qwen2Tokenizer: ")
    assert status(r, "feature_extractor config") == ("ok", "SiglipImageProcessor")
    assert status(r, "transformer flavour")[0] == "warn"                      # tiny target_size 64, not 640
    assert status(r, "fit")[0] == "ok"
    # a fake 80 GB GPU on this machine's CPU-only torch is itself a failure; `check`'s rule that i2v names its
    # vision encoder (vision_encoder_path or the environment variable) is the other; nothing else fails
    assert sorted(c.name for c in r.checks if c.status == "fail") in (["preset"], ["preset", "torch build"])
    assert "vision_encoder_path" in status(r, "preset")[1]


@pytest.mark.slow
def test_tencent_tree_passes(model_trees, tmp_path):
    r = doctor(tmp_path, model_trees["tencent"], "i2v-480p")
    assert model_fails(r) == []
    assert "Tencent's original keys" in status(r, "transformer weights")[1]
    assert status(r, "vae config") == ("ok", "AutoencoderKLConv3D")
    assert status(r, "text_encoder config") == ("ok", "Qwen2_5_VLForConditionalGeneration")
    assert status(r, "text_encoder_2 glyph")[0] == "ok"
    assert "tencent layout" in status(r, "image_encoder")[1]


# ------------------------------------------------------------------------------------------ broken variants

@pytest.mark.slow
def test_missing_shard(model_trees, tmp_path):
    root = copy_tree(model_trees["diffusers"], tmp_path / "m")
    shard = sorted((root / "transformer").glob("*-00002-of-*.safetensors"))[0]
    shard.unlink()
    r = doctor(tmp_path, root)
    st, detail = status(r, "transformer weights")
    assert st == "fail" and "1 shard(s) listed in the index are missing" in detail and shard.name in detail
    assert "download" in r.get("transformer weights").hint
    assert r.exit_code == 3


@pytest.mark.slow
def test_truncated_weights(model_trees, tmp_path):
    root = copy_tree(model_trees["diffusers"], tmp_path / "m")
    f = root / "vae" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[:100_000])
    st, detail = status(doctor(tmp_path, root), "vae weights")
    assert st == "fail" and "truncated" in detail


@pytest.mark.slow
def test_wrong_architecture(model_trees, tmp_path):
    root = copy_tree(model_trees["diffusers"], tmp_path / "m")
    cfg = root / "text_encoder" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "architectures": ["SiglipVisionModel"]}))
    r = doctor(tmp_path, root)
    st, detail = status(r, "text_encoder config")
    assert st == "fail" and "names SiglipVisionModel; expected Qwen2_5_VLTextModel" in detail
    assert "text_encoder_path" in r.get("text_encoder config").hint


@pytest.mark.slow
def test_wrong_task_for_flavour(model_trees, tmp_path):
    r = doctor(tmp_path, model_trees["diffusers"], "t2v-480p")      # the tiny pipeline's transformer is i2v
    st, detail = status(r, "transformer flavour")
    assert st == "fail" and "i2v model but model_flavour is t2v-480p" in detail


@pytest.mark.slow
def test_tokenizer_missing(model_trees, tmp_path):
    root = copy_tree(model_trees["diffusers"], tmp_path / "m")
    (root / "tokenizer" / "tokenizer.json").unlink()
    st, detail = status(doctor(tmp_path, root), "tokenizer files")
    assert st == "fail" and "no tokenizer.json (or vocab.json + merges.txt)" in detail
    shutil.rmtree(root / "tokenizer_2")
    st, detail = status(doctor(tmp_path, root), "tokenizer_2 files")
    assert st == "fail" and "missing folder" in detail


@pytest.mark.slow
def test_wrong_tokenizer_class(model_trees, tmp_path):
    root = copy_tree(model_trees["diffusers"], tmp_path / "m")
    shutil.rmtree(root / "tokenizer_2")
    shutil.copytree(root / "tokenizer", root / "tokenizer_2")
    st, detail = status(doctor(tmp_path, root), "tokenizer_2 files")
    assert st == "fail" and "names Qwen2Tokenizer; expected ByT5Tokenizer" in detail


@pytest.mark.slow
def test_env_var_pointing_nowhere(model_trees, tmp_path):
    env = {ENV_TEXT: str(tmp_path / "nowhere")}
    r = doctor(tmp_path, model_trees["diffusers"], env=env)             # the model folder has the encoders: warn
    st, detail = status(r, "text_encoder source")
    assert st == "warn" and f"${ENV_TEXT}: {tmp_path / 'nowhere'} does not exist" in detail
    assert "used the model folder instead" in detail
    assert r.get("text_encoder source").hint == f"fix or unset ${ENV_TEXT}"
    assert status(r, "text_encoder")[0] == "ok"

    root = copy_tree(model_trees["tencent"], tmp_path / "t")             # no encoders anywhere else: fail
    shutil.rmtree(root / "text_encoder")
    r = doctor(tmp_path, root, env=env)
    assert status(r, "text_encoder source")[0] == "fail"
    st, detail = status(r, "text_encoder")
    assert st == "fail" and f"expected {root / 'text_encoder' / 'llm'}" in detail
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in r.get("text_encoder").hint
    assert status(r, "tokenizer") == ("fail", "not found (comes with text_encoder)")


@pytest.mark.slow
def test_preset_key_pointing_nowhere_fails(model_trees, tmp_path):
    r = doctor(tmp_path, model_trees["diffusers"], text_encoder_path=str(tmp_path / "gone"))
    st, detail = status(r, "text_encoder source")
    assert st == "fail" and f"{tmp_path / 'gone'} does not exist" in detail
    # the run stops: nothing was "used instead"; the hint says the model folder would serve without the key
    assert "instead" not in detail and "the model folder has one" in r.get("text_encoder source").hint


@pytest.mark.slow
def test_glyph_checkpoint_missing(model_trees, tmp_path):
    root = copy_tree(model_trees["tencent"], tmp_path / "t")
    (root / "text_encoder" / "Glyph-SDXL-v2" / "checkpoints" / "byt5_model.pt").unlink()
    st, detail = status(doctor(tmp_path, root), "text_encoder_2 glyph")
    assert st == "fail" and "byt5_model.pt is missing" in detail


@pytest.mark.slow
def test_missing_flavour_weights_name_the_folder(model_trees, tmp_path):
    r = doctor(tmp_path, model_trees["tencent"], "t2v-720p")
    st, detail = status(r, "transformer")
    assert st == "fail" and str(model_trees["tencent"] / "transformer" / "720p_t2v") in detail
    assert status(r, "vae")[0] == "ok"


def test_nonexistent_model_folder_is_one_row_with_one_cause(tmp_path):
    """A missing model folder is one cause: one FAIL row naming the folder, the components it should hold and how
    to get them (not one row per component); a preset path inside that folder is folded in too."""
    root = tmp_path / "models" / "HunyuanVideo-1.5"
    r = doctor(tmp_path, root, "i2v-480p", info=NO_GPU, vision_encoder_path=str(root / "vision_encoder" / "siglip"))
    st, detail = status(r, "model")
    assert st == "fail" and str(root) in detail and "does not exist" in detail
    assert "transformer, vae, scheduler, text_encoder, tokenizer, text_encoder_2, tokenizer_2, image_encoder" in detail
    assert "vision_encoder_path" in detail
    hint = r.get("model").hint
    assert "'transformer/480p_i2v/*'" in hint and "FLUX.1-Redux-dev" in hint and "Qwen2.5-VL-7B-Instruct" in hint
    assert hint.count("hf download tencent/HunyuanVideo-1.5") == 1        # the VAE/scheduler come with it
    fails = [c.name for c in r.checks if c.status == "fail"]
    assert fails == ["model", "fit"], fails                               # no GPU is the other cause
    assert "no GPU found" in status(r, "fit")[1]
    assert r.exit_code == 3
    # the machine-readable report still has each component with the folder it was expected in
    comps = {c["name"]: c for c in json.loads(r.to_json())["components"]}
    assert comps["transformer"]["expected_path"] == str(root / "transformer" / "480p_i2v")


def test_text_encoder_hints_name_one_folder_and_both_spellings_work(model_trees, tmp_path):
    """$HUNYUANVIDEO_TEXT_ENCODER_PATH: the hints name <root>/text_encoder for both text groups; that folder works
    for both, and so does the Qwen2.5-VL folder itself (text_encoder/llm: its siblings hold byT5 and Glyph)."""
    from hvtui.core.env.assets import ENV_TEXT, resolve_components

    missing = doctor(tmp_path, tmp_path / "nowhere")
    comps = {c.name: c for c in missing.components}
    for name in ("text_encoder", "text_encoder_2"):
        assert f"set text_encoder_path (or ${ENV_TEXT}) to <root>/text_encoder," in comps[name].hint
    assert "that folder" not in comps["text_encoder"].hint
    tencent = model_trees["tencent"]
    for value in (tencent / "text_encoder", tencent / "text_encoder" / "llm"):
        p = Preset(pretrained_model_name_or_path=str(tmp_path / "elsewhere"), model_flavour="t2v-480p")
        found = {c.name: c for c in resolve_components(p, {ENV_TEXT: str(value), "HF_HUB_CACHE": str(tmp_path)})}
        for name in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"):
            assert found[name].found and found[name].source == f"env:{ENV_TEXT}", (value, name, found[name].tried)
            assert not found[name].problems
        assert found["text_encoder_2"].path == tencent / "text_encoder" / "byt5-small"


# ------------------------------------------------------------------------------------------ system and fit

def test_builtin_demo_preset_on_a_machine_without_gpu(tmp_path):
    from hvtui.core.preset.schema import load_preset

    r = D.run_doctor(load_preset(ROOT / "presets" / "demo.toml"), gpu=NO_GPU, env={})
    assert status(r, "cuda")[0] == "warn" and "no GPU" in status(r, "cuda")[1]
    assert status(r, "model")[0] == "ok" and status(r, "fit")[0] == "ok"
    assert not r.failed and r.exit_code == 0
    assert all(c.builtin for c in r.components)
    data = json.loads(r.to_json())
    assert data["ok"] is True and data["checks"][0]["name"] == "python"


def test_fit_against_gpus():
    """The doctor quotes the estimate's whole-run peak (NVML) and hints only what is not already set."""
    p = Preset(pretrained_model_name_or_path="/m", model_flavour="t2v-480p")
    from hvtui.core.env.fit import estimate_memory

    est = estimate_memory(p, (848, 480, 61))
    peak = est.peak_gib
    ok = D.check_fit(est, p, gpu(80))
    assert ok.status == "ok" and f"about {peak:.1f} GiB at its peak" in ok.detail
    # the attention cache is optional (it fills what the card has left): "tight" is about what the run needs
    assert est.attention_cache_gib > 0 and est.required_gib < peak
    assert D.check_fit(est, p, gpu(peak / 0.95, name="NVIDIA L40S")).status == "ok"
    tight = D.check_fit(est, p, gpu(est.required_gib / 0.95, name="NVIDIA L40S"))
    assert tight.status == "warn" and tight.detail.startswith("tight")
    small = D.check_fit(est, p, gpu(24, name="NVIDIA GeForce RTX 4090"))
    alt = estimate_memory(p, (848, 480, 61), offload=True)
    assert small.status == "fail" and "enable_group_offload = true" in small.hint
    assert f"the run's peak ~{alt.peak_gib:.1f} GiB" in small.hint
    busy = D.check_fit(est, p, gpu(80, free_gib=10))
    assert busy.status == "warn" and "used by other processes" in busy.detail
    none = D.check_fit(est, p, NO_GPU)
    assert none.status == "fail" and f"about {alt.peak_gib:.1f} GiB" in none.hint and "80 GB" not in none.hint
    # offload already on: no hint to turn it on, and the numbers are the same estimate's
    off = Preset(pretrained_model_name_or_path="/m", model_flavour="t2v-480p", enable_group_offload=True)
    est = estimate_memory(off, (848, 480, 61))
    for info in (NO_GPU, gpu(12, name="NVIDIA GeForce RTX 3060")):
        c = D.check_fit(est, off, info)
        assert c.status == "fail" and "enable_group_offload" not in c.hint, c.hint
        assert f"{est.peak_gib:.1f} GiB" in c.detail
    assert "caching needs" in D.check_fit(est, off, gpu(12)).hint


def test_session_check_over_ssh():
    assert S.check_session({"SSH_CONNECTION": "1.2.3.4 5 6.7.8.9 22"}).status == "warn"
    assert "tmux" in S.check_session({"SSH_TTY": "/dev/pts/1"}).hint
    assert S.check_session({"SSH_CONNECTION": "x", "TMUX": "/tmp/tmux-0/default,1,0"}).detail == "SSH inside tmux"
    assert S.check_session({"SSH_CONNECTION": "x", "STY": "123.pts"}).status == "ok"
    assert S.check_session({}).detail == "local terminal"


def test_torch_build_checks():
    assert S.check_torch_build("2.13.0+cpu", NO_GPU).status == "ok"
    cpu_on_gpu = S.check_torch_build("2.13.0+cpu", gpu(80))
    assert cpu_on_gpu.status == "fail" and "CPU-only" in cpu_on_gpu.detail
    old_driver = S.check_torch_build("2.11.0+cu130", gpu(80, cuda="12.4"))
    assert old_driver.status == "fail" and "CUDA 13.0" in old_driver.detail and "12.4" in old_driver.detail
    assert S.check_torch_build("2.11.0+cu128", gpu(80, cuda="12.8")).status == "ok"
    assert S.check_torch_build(None, NO_GPU).status == "fail"


def test_packages_and_memory_and_disk(tmp_path):
    assert S.check_packages({"torch": "2.13.0", "diffusers": None, "transformers": "5.0", "peft": "0.21",
                             "accelerate": "1.1"}).status == "fail"
    old = S.check_packages({"torch": "2.13.0", "diffusers": "0.35.2", "transformers": "5.0", "peft": "0.21",
                            "accelerate": "1.1"})
    assert old.status == "warn" and "diffusers 0.35.2 < 0.42" in old.detail
    real = Preset(pretrained_model_name_or_path="/m", output_dir=str(tmp_path / "o"))
    assert S.check_host_memory(real, {"MemTotal": 16 * GiB, "MemAvailable": 8 * GiB}).status == "warn"
    assert S.check_host_memory(real, {"MemTotal": 128 * GiB, "MemAvailable": 100 * GiB}).status == "ok"
    disk = S.check_disk(real)
    assert str(tmp_path / "o") in disk.detail and "free" in disk.detail


def test_gpu_check_messages():
    assert S.check_gpu(NO_GPU).status == "warn"
    ok = S.check_gpu(gpu(80))
    assert ok.status == "ok" and "NVIDIA H100 80GB HBM3" in ok.detail and "driver 570.86 (CUDA 12.8)" in ok.detail
    hidden = gpu(80)
    hidden.gpus[0].visible = False
    assert S.check_gpu(hidden).status == "fail"


# ------------------------------------------------------------------------------------------ the command

def run_cli(*args, env=None):
    e = {**os.environ, "HF_HUB_CACHE": "/nonexistent-hf-cache", **(env or {})}
    return subprocess.run([sys.executable, "-m", "hvtui", "doctor", *args], capture_output=True, text=True,
                          cwd=ROOT, env=e, timeout=120)


def test_cli_demo_passes_with_cuda_warning():
    p = run_cli("presets/demo.toml")
    assert p.returncode == 0, p.stdout + p.stderr
    from hvtui.core.env.nvml import query
    if not query().available:
        assert any(line.startswith("warn") and "cuda" in line for line in p.stdout.splitlines())
    assert "0 failed" in p.stdout and "Traceback" not in p.stderr


def test_cli_real_model_with_missing_paths_exits_3(tmp_path):
    preset = tmp_path / "real.toml"
    preset.write_text('pretrained_model_name_or_path = "models/HunyuanVideo-1.5"\nmodel_flavour = "t2v-480p"\n'
                      'text_encoder_path = "models/qwen"\n')
    p = run_cli(str(preset))
    assert p.returncode == 3, p.stdout + p.stderr
    assert str(tmp_path / "models" / "HunyuanVideo-1.5") in p.stdout
    assert str(tmp_path / "models" / "qwen") in p.stdout and "does not exist" in p.stdout
    j = run_cli(str(preset), "--json")
    assert j.returncode == 3
    data = json.loads(j.stdout)
    fails = {c["name"] for c in data["checks"] if c["status"] == "fail"}
    # one row per cause: the model folder, the preset's own text_encoder_path (and no datasets, no GPU here)
    assert data["ok"] is False and fails - {"fit", "preset"} == {"model", "text_encoder source"}
    assert data["components"][0]["source"] == "missing"
    assert data["components"][0]["expected_path"].endswith("transformer/480p_t2v")


def test_cli_unreadable_preset_exits_2(tmp_path):
    p = run_cli(str(tmp_path / "missing.toml"))
    assert p.returncode == 2 and "cannot read preset" in p.stderr


def test_doctor_imports_no_ml_stack_or_ui():
    code = ("import sys; from hvtui.core.preset.schema import load_preset; "
            "from hvtui.core.env.doctor import run_doctor;"
            "run_doctor(load_preset('presets/demo.toml'));"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'peft', 'accelerate', 'textual', 'rich')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_odd_preset_values_give_checks_not_tracebacks(tmp_path):
    r = D.run_doctor(Preset(pretrained_model_name_or_path=str(tmp_path), model_flavour="t2v-1080p",
                            output_dir=5, lora_rank="a"), gpu=NO_GPU, env={}, scan=False)
    assert status(r, "components")[0] == "fail" and "unknown model_flavour 't2v-1080p'" in status(r, "components")[1]
    assert status(r, "disk")[0] == "warn" and status(r, "fit")[0] == "warn"


@pytest.mark.parametrize("preset_text, extra", [
    ("datasets = 5\n", None),                                               # not a list of tables
    ('dataset_backend_config = "db.json"\n', ("db.json", "[1, 2")),         # the dataset file is bad JSON
    ('dataset_backend_config = "db.json"\n', ("db.json", "5")),             # JSON that is not a list
    ("dataset_backend_config = 5\n", None),                                 # not a path
])
def test_broken_dataset_keys_are_not_a_traceback(tmp_path, preset_text, extra):
    """load_preset is lenient (preset/check.py reports these with lines): the doctor still runs its checks."""
    from hvtui.core.preset.schema import load_preset

    (tmp_path / "p.toml").write_text(preset_text)
    if extra:
        (tmp_path / extra[0]).write_text(extra[1])
    assert load_preset(tmp_path / "p.toml").datasets == []
    r = subprocess.run([sys.executable, "-m", "hvtui", "doctor", str(tmp_path / "p.toml")], capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert "Traceback" not in r.stderr and r.returncode in (0, 3), r.stderr


def test_doctor_gpus_counts_this_machines_gpus_and_adds_nccl_to_the_fit(tmp_path, model_trees):
    two = NvmlInfo(True, "", "570.86", "12.8", gpu(80).gpus * 2)
    ok = S.check_gpu_count(2, two)
    assert ok.status == R.OK and "2 GPU(s)" in ok.detail
    bad = S.check_gpu_count(4, two)
    assert bad.status == R.FAIL and "this machine has 2 usable GPU(s)" in bad.detail and "--gpus 2" in bad.detail
    cpu = S.check_gpu_count(2, NO_GPU)                        # CPU processes (gloo): possible, but say so
    assert cpu.status == R.WARN and "2 CPU processes (gloo)" in cpu.detail
    one = doctor(tmp_path, model_trees["diffusers"])
    dp = D.run_doctor(one.preset, env={"HF_HUB_CACHE": str(tmp_path / "hub")}, gpu=gpu(80), scan=False, processes=2)
    assert dp.fit.peak_gib > one.fit.peak_gib and "NCCL" in status(dp, "fit")[1]


def test_the_preset_check_fails_the_doctor_like_check_does(tmp_path, model_trees):
    """A preset `hvtui check` rejects is never "ready": the doctor names its first error."""
    typo = tmp_path / "typo.toml"
    typo.write_text((ROOT / "presets" / "demo.toml").read_text().replace("lora_rank =", "lora_rnak ="))
    from hvtui.core.preset.schema import load_preset

    r = D.run_doctor(load_preset(typo), gpu=NO_GPU, env={})
    st, detail = status(r, "preset")
    assert st == "fail" and "lora_rnak: unknown key" in detail and "did you mean lora_rank" in detail
    assert r.exit_code == 3
    assert status(D.run_doctor(load_preset(ROOT / "presets" / "demo.toml"), gpu=NO_GPU, env={}), "preset")[0] == "ok"
