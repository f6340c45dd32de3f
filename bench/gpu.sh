#!/usr/bin/env bash
# The GPU figures in one prepared run (≤ 8 minutes on an H100-class GPU):
#   capture cost, SD 1.5 UNet architecture, 512², 20 steps, fp16: whole-run ratio and the capture's own work
#   the same for the SDXL base UNet architecture at 1024², 20 steps
#   the transformers: FLUX.1 schnell (4 steps, its own count) and SD3 medium at 1024², with and without concepts
#   fan-out to 8 websocket clients and step-to-wire latency, both wires
# Try it on a CPU first with tiny sizes and few blocks:
#   DEVICE=cpu SIZE=64 XL_SIZE=128 T_SIZE=128 STEPS=2 FLUX_BLOCKS=1,1 SD3_BLOCKS=1 ROUNDS=2 bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-512}
XL_SIZE=${XL_SIZE:-1024}
STEPS=${STEPS:-20}
T_SIZE=${T_SIZE:-1024}
FLUX_BLOCKS=${FLUX_BLOCKS:-}   # empty: all 19 + 38 (12 B parameters, bf16 on the GPU)
SD3_BLOCKS=${SD3_BLOCKS:-}     # empty: all 24
ROUNDS=${ROUNDS:-7}
echo "== capture cost: SD 1.5 UNet, ${SIZE}², ${STEPS} steps, ${DEVICE}"
"$PY" bench/capture_overhead.py --device "$DEVICE" --size "$SIZE" --steps "$STEPS" --repeats 3
echo "== capture cost: SDXL base UNet, ${XL_SIZE}², ${STEPS} steps, ${DEVICE}"
"$PY" bench/capture_overhead.py --arch sdxl --device "$DEVICE" --size "$XL_SIZE" --steps "$STEPS" --repeats 3 --no-box
echo "== capture cost: FLUX.1 schnell transformer, ${T_SIZE}², 4 steps, ${DEVICE}"
"$PY" bench/capture_overhead.py --arch flux ${FLUX_BLOCKS:+--blocks "$FLUX_BLOCKS"} --device "$DEVICE" --size "$T_SIZE" --steps 4 --repeats 3 --no-box
echo "== capture cost: SD3 medium transformer, ${T_SIZE}², ${STEPS} steps, ${DEVICE}"
"$PY" bench/capture_overhead.py --arch sd3 ${SD3_BLOCKS:+--blocks "$SD3_BLOCKS"} --device "$DEVICE" --size "$T_SIZE" --steps "$STEPS" --repeats 3 --no-box
echo "== fan-out and latency: builtin:tiny, 8 clients, both wires"
"$PY" bench/latency.py --rounds "$ROUNDS" --steps 60
