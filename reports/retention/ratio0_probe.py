"""Issue 12 retention probe: ratio-0 full tuning (32 steps x 16, the mixing grid's cpu point) from the
shipped base; held-out denoising loss vs the base, paired over 64 held-out scenes x 5 timesteps."""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from banana.models import BananaGenerator
from banana.training import TrainConfig, train, load_run
from banana.evaluation.retention import denoising_loss
from banana.world import load_world
VARIANTS = {
    "lr1e-3": {}, "lr3e-4": {"learning_rate": 3e-4}, "lr1e-4": {"learning_rate": 1e-4},
    "lr1e-3-ema0": {"ema_decay": 0.0}, "lr1e-3-pretrain-drops": {"drop_text_prob": 0.10, "drop_image_prob": 0.0, "drop_both_prob": 0.0},
    "lr1e-4-ema0": {"learning_rate": 1e-4, "ema_decay": 0.0},
}
world = load_world("data/world/cpu")
base = BananaGenerator.from_pretrained("data/generators/base-cpu")
ref = np.array(denoising_loss(base, world["held_out"], n=64, seed=0)["per_example"])  # [T, n]
out = {}
for name in sys.argv[1:] or VARIANTS:
    cfg = TrainConfig(stage="tune", tuning="full", mixing_ratio=0.0, max_steps=32, batch_size=16, profile="cpu",
                      seed=0, checkpoint_every=32, **{"learning_rate": 1e-3, **VARIANTS[name]})
    t = time.time()
    run = train(cfg, f"runs/retention12/{name}", generator="data/generators/base-cpu", world_dir="data/world/cpu", progress=False)
    tuned = np.array(denoising_loss(load_run(run), world["held_out"], n=64, seed=0)["per_example"])
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(2000):
        idx = rng.integers(0, 64, 64)
        boots.append(100 * (tuned[:, idx].mean() / ref[:, idx].mean() - 1))
    out[name] = {"increase_pct": 100 * (tuned.mean() / ref.mean() - 1), "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
                 "base": ref.mean(), "tuned": tuned.mean(), "seconds": round(time.time() - t)}
    print(name, json.dumps(out[name]), flush=True)
json.dump(out, open("runs/retention12/results.json", "w"), indent=1)
