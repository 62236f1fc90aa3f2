"""How clearly the photos tell a noise-predicting UNet from a v-predicting one (the check
`learn` runs on SD 2.x single files without a .yaml; oneword.core.prediction).

The world model predicts noise; the same model made to predict v is exact: with
x_t = sqrt(a) x0 + sqrt(1 - a) eps, v = (eps - sqrt(1 - a) x_t) / sqrt(a). For each subject's
photos, both models' relative error against both targets (1.0 for an output of zeros).

    python bench/prediction_check_world.py [--subjects cat,dog,ball,robot,teddy] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from oneword.adapters.loading import load_model
from oneword.core.prediction import pick_prediction, prediction_errors
from oneword.world.evaluate import subject_photos


def as_v_model(model):
    real = model.predict_noise

    def predict_v(noisy, timesteps, text):
        a = model.alphas_cumprod[timesteps.cpu()].float().view(-1, 1, 1, 1).to(noisy.device)
        return (real(noisy, timesteps, text) - (1 - a).sqrt() * noisy) / a.sqrt()

    model.predict_noise = predict_v
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", default="cat,dog,ball,robot,teddy")
    p.add_argument("--photos", type=int, default=4)
    p.add_argument("--json")
    a = p.parse_args(argv)
    models = {
        "epsilon": load_model("world", "cpu"),
        "v_prediction": as_v_model(load_model("world", "cpu")),
    }
    rows = []
    print(f"{'subject':8s} {'model':13s} {'vs noise':>9s} {'vs v':>7s}  told")
    for subject in a.subjects.split(","):
        photos = subject_photos(subject, a.photos, torch.Generator().manual_seed(0)) * 2 - 1
        for kind, model in models.items():
            errors = prediction_errors(model, photos, torch.Generator().manual_seed(0))
            told = pick_prediction(errors)
            rows.append({"subject": subject, "model": kind, "errors": errors, "told": told})
            print(
                f"{subject:8s} {kind:13s} {errors['epsilon']:9.3f} {errors['v_prediction']:7.3f}"
                f"  {told}"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if all(r["told"] == r["model"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
