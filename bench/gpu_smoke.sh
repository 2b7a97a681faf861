#!/usr/bin/env bash
# The real trainer end to end on a CUDA machine with the tiny model: doctor, the demo preset as shipped, and the
# demo with bf16 + hvtui's offload (side stream) + compiled blocks. Logs and events land in $OUT.
set -u
OUT=${OUT:-/tmp/hvtui-gpu-smoke}
mkdir -p "$OUT"
nvidia-smi -L
python3 -m hvtui doctor presets/demo.toml > "$OUT/doctor.txt" 2>&1; echo "doctor exit $?"
tail -4 "$OUT/doctor.txt"
start=$(date +%s)
python3 -m hvtui --run presets/demo.toml > "$OUT/demo.txt" 2>&1; echo "demo exit $? in $(( $(date +%s) - start )) s"
grep -E "^step (1|120)/|attention|compile|finished" "$OUT/demo.txt" | head -8
cp output/demo/events.jsonl "$OUT/demo-events.jsonl" 2>/dev/null
sed -e 's/^mixed_precision = .*/mixed_precision = "bf16"/' -e 's/^max_train_steps = .*/max_train_steps = 40/' \
    -e 's#^output_dir = .*#output_dir = "../output/demo-offload"#' -e 's/^validation_steps = .*/validation_steps = 40/' \
    presets/demo.toml > presets/demo-offload-smoke.toml
printf 'enable_group_offload = true\ngroup_offload_use_stream = true\n' > /tmp/offload-keys
# top-level keys must precede the first table
python3 - <<'PY'
from pathlib import Path
p = Path("presets/demo-offload-smoke.toml"); s = p.read_text()
i = s.index("[[datasets]]")
p.write_text(s[:i] + Path("/tmp/offload-keys").read_text() + "\n" + s[i:])
PY
start=$(date +%s)
python3 -m hvtui --run presets/demo-offload-smoke.toml > "$OUT/offload.txt" 2>&1; echo "offload demo exit $? in $(( $(date +%s) - start )) s"
grep -E "^step (1|40)/|offload|finished" "$OUT/offload.txt" | head -8
cp output/demo-offload/events.jsonl "$OUT/offload-events.jsonl" 2>/dev/null
rm -f presets/demo-offload-smoke.toml
