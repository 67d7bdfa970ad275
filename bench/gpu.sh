#!/usr/bin/env bash
# The GPU check, on the lent machine (../shared/device/README.md): the cuda tests, then every GPU figure,
# in two calls of under ten minutes each (a session has about fifteen minutes of device time in all):
#   part1 (~7 min): cuda tests, tiny.en's decode-step times, its load curve (64-512 clients) with a
#         py-spy profile at 512, then the host at 512 clients with Python's default 5 ms GIL switch
#         interval against 0.5 ms (bench/switch/sitecustomize.py), a profile of each
#   part2 (~6 min): step times and load curves of random-weight base- and large-v3-turbo-shaped models,
#         whole-process `streamer transcribe --device cuda` on a 7 s clip, batched long-form on 10 min
# Each writes $OUT/summary-PART.txt (what it printed), the load figures as JSON and the profiles: at most
# eight files, as a call brings back.
#
# Before the calls, here: ../shared/device/stage.sh stages websockets, webrtcvad, soxr and pytest-asyncio
# only; `streamer serve` also needs uvicorn, starlette and python-multipart, and the profiles py-spy:
#   pip download -q --no-deps --only-binary=:all: -d .device/common/whl uvicorn==0.54.0 starlette==1.10.0 \
#       python-multipart==0.0.34 py-spy==0.4.3
# and replace stage.sh's websockets wheel with this checkout's version (e.g. 15.0.1, --platform
# manylinux_2_17_x86_64 --python-version 3.12). Then call 1 (stash.sh), and call 2:
#   . .device/common/env.sh && bash bench/gpu.sh part1
# and at once (the machine stays warm 30 s), carrying .device/common: the same with part2.
set -uo pipefail
part=${1:-part1}
OUT=${OUT:-/tmp/gpu-out}
logs=/tmp/gpu-logs
mkdir -p "$OUT" "$logs"
summary=$OUT/summary-$part.txt
# That machine's image writes no bytecode next to its packages: without a cache every process compiles
# torch's modules again (2 s), which is no user's start-up.
unset PYTHONDONTWRITEBYTECODE
export PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 PYTHONPYCACHEPREFIX=/tmp/pycache
procs=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))  # client processes: the cores the daemon leaves
say() { tee -a "$summary"; }
load() {  # load TAG COUNTS SERVE-OPTIONS [more bench/load.py options]
    local tag=$1 counts=$2 serve=$3; shift 3
    echo "== load $tag: clients $counts, serve $serve $*" | say
    timeout "${LOAD_TIMEOUT:-330}" python3 bench/load.py --clients "$counts" --procs "$procs" --frame 0.1 --stagger 5 \
        --sets librivox --serve "$serve" --json "$OUT/load-$tag.json" "$@" 2>"$logs/load-$tag.err" \
        | grep -v "^client 0 finals" | say
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || { echo "load $tag: exit $rc" | say; tail -5 "$logs/load-$tag.err" | say; }
}
case "$part" in
part1)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | say
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | say
    timeout 120 python3 -m pytest -q -p no:cacheprovider -m cuda tests/decoding/test_step.py tests/test_engine.py \
        2>&1 | tail -3 | say
    timeout 120 python3 bench/decode.py --device cuda --models tiny.en --batches 1,64,256 2>&1 | tail -4 | say
    mkdir -p "$OUT/curve" "$OUT/default" "$OUT/switch"
    LOAD_TIMEOUT=260 load tiny 64,128,256,384,512 "--device cuda --max-batch 256" --profile 10 \
        --profile-dir "$OUT/curve"
    LOAD_TIMEOUT=75 load host-default 512 "--device cuda --max-batch 256" --profile 10 --profile-dir "$OUT/default"
    SWITCH_INTERVAL=0.0005 PYTHONPATH="$PWD/bench/switch:${PYTHONPATH:-}" LOAD_TIMEOUT=75 \
        load host-switch 512 "--device cuda --max-batch 256" --profile 10 --profile-dir "$OUT/switch"
    ;;
part2)
    nvidia-smi --query-gpu=name --format=csv,noheader | say
    timeout 100 python3 bench/decode.py --device cuda --models random:base,random:large-v3-turbo --batches 1,64 \
        2>&1 | tail -5 | say
    LOAD_TIMEOUT=110 load base 64,256 "--model random:base --device cuda --max-batch 256" --no-words
    LOAD_TIMEOUT=110 load turbo 64,256 "--model random:large-v3-turbo --device cuda --max-batch 256" --no-words
    clip=tests/fixtures/sense_and_sensibility_01_austen_64kb-0870.wav
    TIMEFORMAT="whole process %R s"
    python3 -m streamer transcribe "$clip" --device cuda >/dev/null 2>&1  # fills the bytecode cache
    { time python3 -c "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()"; } 2>&1 \
        | sed 's/^/import torch and start CUDA: /' | say
    for flags in "" "" "--batch-size 8"; do
        echo "streamer transcribe (7 s clip) --device cuda $flags:" | say
        { time (timeout 60 python3 -m streamer transcribe "$clip" --device cuda $flags >/dev/null); } 2>&1 | say
    done
    timeout 120 python3 bench/longform.py --device cuda --minutes 10 --batch-sizes 16,64 2>&1 | tail -5 | say
    ;;
*)
    echo "usage: bash bench/gpu.sh part1|part2" >&2
    exit 2
    ;;
esac
