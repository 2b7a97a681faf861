"""Fixtures the tests share.

clips        the trainer tests' dataset: a module's own folder of synthetic PyAV clips (80x80, 9 frames, one
             caption each; tests.helpers.loop_presets.write_clips) and the latent-cache folder the module's runs
             share, as (data_dir, cache_dir). Two clips, or the module's CLIP_COUNT.
model_trees  the tiny HunyuanVideo 1.5 model folders in both layouts (tests.helpers.doctor_trees), built once per
             session; copy one (copy_tree) before breaking it.
no_cuda      `hvtui check` on a machine without CUDA (the clip-memory bound then uses host memory only), so a
             test's expected problems do not depend on the machine it runs on.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def clips(request, tmp_path_factory):
    from tests.helpers.loop_presets import write_clips

    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    return write_clips(root / "data", getattr(request.module, "CLIP_COUNT", 2)), root / "cache"


@pytest.fixture(scope="session")
def model_trees(tmp_path_factory):
    from tests.helpers.doctor_trees import build_trees

    return build_trees(tmp_path_factory.mktemp("trees"))


@pytest.fixture
def no_cuda(monkeypatch):
    from hvtui.core.preset import check_rules

    monkeypatch.setattr(check_rules, "cuda_available", lambda: False)
