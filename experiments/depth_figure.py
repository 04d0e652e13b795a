"""Mono vs stereo, the lecture's picture: image, ground truth, monocular prediction, stereo prediction.

On each real pair with ground truth (Middlebury Motorcycle 1/4, Aloe 1/8): the left image, its
true disparity, ``monodepth_narrow`` (Godard et al.) from the left image alone, and
``stereo_net_narrow`` from the pair, each with its EPE / bad-2 on the valid pixels.

* The monocular models are trained here, self-supervised, in the **cross setting** only: the one
  scored on Motorcycle trained on Aloe's two views (no labels), and vice versa
  (``experiments/monodepth.py``'s training: 300 steps, LR term off, ``max_disparity`` 0.2, the best
  cross setting of experiments/RESULTS_monodepth.md section 3).
* The stereo network's weights come from ``experiments/stereo.py`` (``--stereo``: its
  ``stereo_net_narrow.safetensors``; trained on the shapes world and on stereo-warped photos,
  never on these pairs).

    OMP_NUM_THREADS=1 python experiments/depth_figure.py --stereo out/stereo/stereo_net_narrow.safetensors
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from monodepth import train  # noqa: E402

from structpred.data.stereo_real import StereoReal  # noqa: E402
from structpred.metrics.depth import disparity_metrics  # noqa: E402
from structpred.models import get_model  # noqa: E402
from structpred.viz.depth import disparity_to_color  # noqa: E402

LOG = logging.getLogger("depth_figure")
PAIRS = {"motorcycle": 4.0, "aloe": 8.0}  # name -> downscale, as RESULTS_monodepth / RESULTS_stereo
CROSS = {"motorcycle": "aloe", "aloe": "motorcycle"}  # scored pair -> the pair the mono model trained on


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stereo", type=Path, required=True, help="stereo_net_narrow weights (.safetensors)")
    p.add_argument("--out", type=Path, default=Path("experiments/figures/depth_mono_vs_stereo.png"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    stereo = get_model("stereo_net_narrow").eval()
    stereo.load_state_dict(load_file(str(args.stereo)))
    rows = []
    for name, scale in PAIRS.items():
        views, target = StereoReal("val", pairs=(name,), scale=scale)[0]
        other, _ = StereoReal("train", pairs=(CROSS[name],), scale=PAIRS[CROSS[name]])[0]  # no labels
        t0 = time.time()
        mono, _ = train(other[None], args.steps, 2, 3e-4, False, args.seed, 0.2)
        LOG.info("mono trained on %s in %.0f s", CROSS[name], time.time() - t0)
        mono.eval()
        with torch.no_grad():
            mono_disp = mono(views[None, :1])[0]["disparity"][0]  # (1, H, W): the left view alone
            stereo_disp = stereo(views[None])[0]["disparity"][0]  # (1, H, W): the pair
        gt, valid = target["disparity"], target["valid"]
        scores = {
            key: disparity_metrics(pred, gt, valid)
            for key, pred in (("mono", mono_disp), ("stereo", stereo_disp))
        }
        LOG.info("%s: %s", name, {k: {m: round(v, 3) for m, v in s.items()} for k, s in scores.items()})
        rows.append((name, views[0], gt, valid, mono_disp, stereo_disp, scores))
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 3.2 * len(rows)))
    for r, (name, image, gt, valid, mono_disp, stereo_disp, scores) in enumerate(rows):
        top = float(gt[0][valid].max())  # one colour scale per row: the true range
        panels = [
            (image.clamp(0, 1).permute(1, 2, 0).numpy(), f"{name} (left image)"),
            (disparity_to_color(gt, top, valid).permute(1, 2, 0).numpy(), "ground truth disparity"),
            (
                disparity_to_color(mono_disp, top).permute(1, 2, 0).numpy(),
                f"mono (trained on {CROSS[name]}): EPE {scores['mono']['epe']:.2f} px, "
                f"bad-2 {scores['mono']['bad2']:.0f} %",
            ),
            (
                disparity_to_color(stereo_disp, top).permute(1, 2, 0).numpy(),
                f"stereo: EPE {scores['stereo']['epe']:.2f} px, bad-2 {scores['stereo']['bad2']:.0f} %",
            ),
        ]
        for c, (picture, title) in enumerate(panels):
            axes[r, c].imshow(picture)
            axes[r, c].set_title(title, fontsize=8)
            axes[r, c].axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    LOG.info("-> %s", args.out)


if __name__ == "__main__":
    main()
