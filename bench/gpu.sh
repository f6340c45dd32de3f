#!/usr/bin/env bash
# The GPU figures in one prepared run (≤ 8 minutes on an H100-class GPU):
#   capture cost, SD 1.5 UNet architecture, 512², 20 steps, fp16: whole-run ratio and the capture's own work
#   fan-out to 8 websocket clients and step-to-wire latency, both wires
# Try it on a CPU first with tiny sizes:  DEVICE=cpu SIZE=64 STEPS=2 ROUNDS=2 bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-512}
STEPS=${STEPS:-20}
ROUNDS=${ROUNDS:-7}
echo "== capture cost: SD 1.5 UNet, ${SIZE}², ${STEPS} steps, ${DEVICE}"
"$PY" bench/capture_overhead.py --device "$DEVICE" --size "$SIZE" --steps "$STEPS" --repeats 3
echo "== fan-out and latency: builtin:tiny, 8 clients, both wires"
"$PY" bench/latency.py --rounds "$ROUNDS" --steps 60
