#!/usr/bin/env bash
# One-GPU check of banana's `gpu` profile: throughput, MFU and short real training runs.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh   # from the repository root; ~5 min expected on one H100
#
# Every step has its own timeout, and none starts after DEADLINE seconds (default 450), so the
# whole script ends within ~8 minutes even if something hangs (skipped steps say so in status.tsv).
#
# Assumes (installs nothing, downloads nothing): a CUDA build of torch 2.13/2.14 installed into
# .venv first, then `make install TORCH_SPEC=` (README, "Installing by hand, and on a GPU"); or set
# PYTHON to an interpreter with banana and a CUDA torch. Optional: PEAK_TFLOPS (the card's dense
# bf16 peak, the MFU denominator; default 989 = H100 SXM; H100 PCIe: 756), WORK (scratch space for
# the world and the runs, default /tmp/banana-gpu-check; not copied to $OUT).
#
# Writes under $OUT: summary.md (labelled with torch.cuda.get_device_name()), env.json,
# bench_*.json (benchmarks/bench_training.py: img/s, FLOPs per image, MFU, peak memory),
# runs/<name>/{metrics.json,config.json,run_info.json,loss_curve.png}, logs/<step>.log and
# status.tsv (exit code and seconds of every step). A failing step is recorded and the next runs.
#
# Plumbing dry run on a CPU machine (numbers meaningless):
#   OUT=/tmp/gpu-check ACCEL=cpu PROFILE=smoke STEPS=4 BENCH_STEPS=2 bash benchmarks/gpu_check.sh
set -uo pipefail

: "${OUT:?set OUT to the output directory}"
PYTHON=${PYTHON:-.venv/bin/python}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
WORK=${WORK:-/tmp/banana-gpu-check}
ACCEL=${ACCEL:-cuda}      # cuda | cpu (dry run)
PROFILE=${PROFILE:-gpu}   # generator preset and world profile
STEPS=${STEPS:-150}       # optimiser steps of the pretraining and LoRA runs
BENCH_STEPS=${BENCH_STEPS:-20}   # timed steps per throughput measurement (after 5 warm-up steps)
DEADLINE=${DEADLINE:-450} # seconds: no step starts later, and none runs past it
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg TQDM_DISABLE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT/logs" "$OUT/runs" "$WORK"
printf 'step\texit\tseconds\n' > "$OUT/status.tsv"

step() {   # step NAME TIMEOUT_S COMMAND...: run, log, record; never aborts the script
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS left=$((DEADLINE - SECONDS))
    if (( left < 15 )); then
        printf '%s\tskipped (deadline)\t0\n' "$name" >> "$OUT/status.tsv"
        return 0
    fi
    (( limit > left )) && limit=$left
    echo "== $name: $*" | tee "$OUT/logs/$name.log"
    timeout --signal=INT --kill-after=20 "$limit" "$@" >> "$OUT/logs/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/status.tsv"
    tail -n 5 "$OUT/logs/$name.log"
    return 0
}

keep_run() {   # copy a run's small records (not checkpoints or weights) to $OUT/runs/NAME
    mkdir -p "$OUT/runs/$1"
    cp "$WORK/runs/$1"/{metrics.json,config.json,run_info.json,loss_curve.png} "$OUT/runs/$1/" 2>/dev/null || true
}

step env 60 "$PYTHON" - "$OUT/env.json" "$ACCEL" <<'EOF'
import json, platform, sys, torch
info = {"torch": torch.__version__, "python": sys.version.split()[0], "host": platform.node()}
if sys.argv[2] == "cuda":
    assert torch.cuda.is_available(), "no CUDA device visible to torch (CPU-only build?)"
    props = torch.cuda.get_device_properties(0)
    info.update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                bf16_supported=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version())
else:
    info.update(device_name=f"CPU dry run ({platform.machine()})")
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(info)
EOF

# 1. A smaller world than the gpu preset's 23,000 scenes (that render takes ~8 min on one core):
#    2,000 training scenes at the preset's 64 px and 2 samples per pixel.
WORLD="$WORK/world-$PROFILE-2k"
step world 150 "$PYTHON" -m banana.cli world build --profile "$PROFILE" --n-train 2000 --n-val 64 --n-test 64 \
    --n-held-out 64 --out "$WORLD" --no-progress

# 2. The training step alone (no data pipeline, no Lightning): bf16 autocast, full and LoRA, with
#    FLOPs counted on one step -> MFU against PEAK_TFLOPS; fp32 for comparison.
BENCH=(benchmarks/bench_training.py --presets "$PROFILE" --device "$ACCEL" --steps "$BENCH_STEPS" --warmup 5)
step bench_bf16_b64 90 "$PYTHON" "${BENCH[@]}" --precision bf16 --batch-size 64 --mfu \
    --peak-tflops "$PEAK_TFLOPS" --json "$OUT/bench_bf16_b64.json"
step bench_bf16_b256 90 "$PYTHON" "${BENCH[@]}" --precision bf16 --batch-size 256 --mfu \
    --peak-tflops "$PEAK_TFLOPS" --json "$OUT/bench_bf16_b256.json"
step bench_fp32_b64 90 "$PYTHON" "${BENCH[@]}" --precision fp32 --batch-size 64 --json "$OUT/bench_fp32_b64.json"

# 3. Real runs through Lightning (data pipeline in the main process, deterministic="warn"):
#    a short pretraining (a fresh gpu-preset base; none is shipped), LoRA tuning from it, and the
#    DDP code path on one device (NCCL process group, 1 rank).
TRAIN=(--profile "$PROFILE" --world-dir "$WORLD" --batch-size 64 --precision bf16-mixed --accelerator "$ACCEL"
       --no-progress)
step pretrain 100 "$PYTHON" -m banana.cli pretrain "${TRAIN[@]}" --max-steps "$STEPS" --checkpoint-every "$STEPS" \
    --run-dir "$WORK/runs/pretrain"
keep_run pretrain
step tune_lora 100 "$PYTHON" -m banana.cli tune "${TRAIN[@]}" --base "$WORK/runs/pretrain/model" --tuning lora \
    --max-steps "$STEPS" --checkpoint-every "$STEPS" --run-dir "$WORK/runs/tune_lora"
keep_run tune_lora
step tune_full_ddp1 80 "$PYTHON" -m banana.cli tune "${TRAIN[@]}" --base "$WORK/runs/pretrain/model" --tuning full \
    --devices 1 --strategy ddp --max-steps $((STEPS / 4 + 1)) --checkpoint-every "$STEPS" \
    --run-dir "$WORK/runs/tune_full_ddp1"
keep_run tune_full_ddp1

# 4. summary.md from what was written above.
"$PYTHON" - "$OUT" "$PROFILE" <<'EOF' > "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
load = lambda p: json.loads(p.read_text()) if p.is_file() else None
env = load(out / "env.json") or {}
print(f"# banana gpu check: {env.get('device_name', 'unknown device')}\n")
print(f"torch {env.get('torch')}, CUDA {env.get('cuda')}, {env.get('memory_gib')} GiB, "
      f"capability {env.get('capability')}, host {env.get('host')}\n")
print("Lightning runs are deterministic='warn' and load data in the main process (num_workers=0), so they\n"
      "measure the whole pipeline, not the step; the 2,000-scene world is smaller than the profile's.\n")
print(f"## Training step (benchmarks/bench_training.py, `{sys.argv[2]}` preset, random data, median step time)\n")
print("| precision | batch | tuning | img/s | GFLOP/img (fwd+bwd) | TFLOP/s | MFU | peak mem GiB |")
print("|---|---|---|---|---|---|---|---|")
for name in ("bench_bf16_b64", "bench_bf16_b256", "bench_fp32_b64"):
    bench = load(out / f"{name}.json")
    for m in (bench or {}).get("measurements", []):
        gflop = f"{m['flops_per_image'] / 1e9:.1f}" if "flops_per_image" in m else "-"
        tflops = f"{m['achieved_tflops']:.1f}" if "achieved_tflops" in m else "-"
        mfu = f"{100 * m['mfu']:.1f}% of {m['peak_tflops']:g}" if "mfu" in m else "-"
        print(f"| {m['precision']} | {m['batch_size']} | {m['tuning']} | {m['images_per_second']:.0f} | {gflop} | "
              f"{tflops} | {mfu} | {m.get('peak_memory_gib', 0):.1f} |")
print(f"\n## Lightning runs (`{sys.argv[2]}` profile, bf16-mixed, batch 64, 2,000-scene world)\n")
print("| run | steps | img/s | world size | mean loss last 10% | wall s |")
print("|---|---|---|---|---|---|")
for run in ("pretrain", "tune_lora", "tune_full_ddp1"):
    m = load(out / "runs" / run / "metrics.json")
    if m:
        loss = m["mean_loss_last_10pct"]
        print(f"| {run} | {m['steps']} | {m['images_per_second']} | {m.get('world_size', 1)} | "
              f"{'-' if loss is None else f'{loss:.4f}'} | {m['wall_seconds']} |")
    else:
        print(f"| {run} | failed: see logs/{run}.log | | | | |")
print("\n## Steps\n\n```\n" + (out / "status.tsv").read_text() + "```")
EOF
cat "$OUT/summary.md"
