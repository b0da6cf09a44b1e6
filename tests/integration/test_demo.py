"""`make demo` end to end, as a new user runs it, with its default quick settings.

Run with a broker configured, so the demo's own worker serves the jobs through Redis (the local
mode path is what the other service tests cover in-process).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aeq.evaluation.metrics import psnr

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S = 900


def test_demo_trains_exports_and_denoises_through_the_queue(service, mnist, tmp_path):
    out = tmp_path / "demo"

    result = service.aeq(
        "demo", "--out", str(out), "--data", str(mnist.data_arg), timeout=DEMO_TIMEOUT_S
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting a worker for the demo's models" in result.stdout
    clean = np.load(out / "clean.npy") / 255.0
    noisy = np.load(out / "noisy.npy") / 255.0
    denoised = np.load(out / "denoised.npy") / 255.0
    assert clean.shape == noisy.shape == denoised.shape == (64, 28, 28)
    assert psnr(clean, denoised) > psnr(clean, noisy) + 3.0
    assert len(list((out / "denoised").glob("*.png"))) == 64
    picture = Image.open(out / "before-after.png")
    assert picture.width > 3 * picture.height / 2  # three panels side by side
    assert "PSNR" in result.stdout and str(out / "before-after.png") in result.stdout
    assert sorted(p.name for p in (out / "model_repository").iterdir()) == sorted(
        ["conv", "denoising", "multilayer", "sparse", "vanilla"]
    )


def test_demo_refuses_to_clear_a_folder_it_did_not_make(service, tmp_path):
    precious = tmp_path / "precious"
    (precious / "trained").mkdir(parents=True)  # looks like an aeq project, is not a demo folder
    (precious / "thesis.tex").write_text("years of work\n")
    result = service.aeq("demo", "--out", str(precious))
    assert result.returncode == 2
    assert "not a demo folder" in result.stderr
    assert (precious / "thesis.tex").read_text() == "years of work\n"
