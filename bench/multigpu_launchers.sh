#!/usr/bin/env bash
# The real trainer, data-parallel on 2 GPUs with the tiny demo model, through each way of starting it:
# `hvtui --run --gpus 2`, `accelerate launch --multi_gpu`, and torchrun directly. Each must exit 0 with a
# final LoRA; the losses of the three runs are printed side by side (same seed, same global batch).
# Logs and events land in $OUT.
set -u
OUT=${OUT:-/tmp/hvtui-multigpu-launchers}
mkdir -p "$OUT"
nvidia-smi -L
STEPS=${STEPS:-30}
for how in gpus accelerate torchrun; do
    sed -e "s/^max_train_steps = .*/max_train_steps = $STEPS/" -e "s#^output_dir = .*#output_dir = \"../output/mg-$how\"#" \
        -e "s/^validation_steps = .*/validation_steps = $STEPS/" -e "s/^checkpointing_steps = .*/checkpointing_steps = 10/" \
        presets/demo.toml > "presets/mg-$how.toml"
    case $how in
        gpus) cmd=(python3 -m hvtui --run "presets/mg-$how.toml" --gpus 2) ;;
        accelerate) cmd=(python3 -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1
                         --mixed_precision no --dynamo_backend no -m hvtui --run "presets/mg-$how.toml") ;;
        torchrun) cmd=(python3 -m torch.distributed.run --standalone --nproc_per_node 2 -m hvtui -- --run
                       "presets/mg-$how.toml") ;;
    esac
    start=$(date +%s)
    "${cmd[@]}" > "$OUT/$how.txt" 2>&1
    echo "$how: exit $? in $(( $(date +%s) - start )) s; final LoRA: $(ls output/mg-$how/pytorch_lora_weights.safetensors 2>/dev/null || echo missing)"
    grep -E "data-parallel|^step ($STEPS)/|finished" "$OUT/$how.txt" | head -4
    cp "output/mg-$how/events.jsonl" "$OUT/$how-events.jsonl" 2>/dev/null
    rm -f "presets/mg-$how.toml"
done
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
runs = {}
for how in ("gpus", "accelerate", "torchrun"):
    f = Path(sys.argv[1]) / f"{how}-events.jsonl"
    ev = [json.loads(l) for l in f.read_text().splitlines()[1:]] if f.exists() else []
    runs[how] = {e["step"]: e["loss"] for e in ev if e.get("kind") == "step"}
steps = sorted(set().union(*runs.values()))
print("step " + " ".join(f"{h:>12}" for h in runs))
for s in steps[:3] + steps[-2:]:
    print(f"{s:4d} " + " ".join(f"{runs[h].get(s, float('nan')):12.6f}" for h in runs))
a = [runs[h] for h in runs if runs[h]]
print("max loss difference between launchers:", max(abs(x[s] - a[0][s]) for x in a for s in x if s in a[0]) if len(a) > 1 else "n/a")
PY
