"""The machine and the model files, judged before anything heavy loads: where every model component comes from
(assets.py, model_files.py), `hvtui doctor` (doctor.py and its doctor_*.py parts), the GPU-memory estimate
(fit.py, calibrated by fit_calibrate.py from measured runs into memory_calibration.json), NVIDIA GPUs through NVML
(nvml.py), the GPU sampler of a run (telemetry.py) and the CUDA allocator's mode (cuda_allocator.py)."""
