#!/usr/bin/env bash
# The GPU check, on the lent machine (../shared/device/README.md): the cuda tests, then every GPU figure.
#   part 1: cuda tests, decode-step times, the tiny.en load curve (64-512 clients) with a py-spy profile
#   part 2: the load curve of random-weight base- and large-v3-turbo-shaped models, their step times
#   part 3: whole-process `streamer transcribe --device cuda` on a 7 s clip, batched long-form on 10 min
#   part 4: the host at 512 clients: Python's default 5 ms GIL switch interval against 0.5 ms
#           (bench/switch/sitecustomize.py), with a py-spy profile of each
# Run from the checkout's root after `. .device/common/env.sh`; logs and figures go to $OUT.
# ../shared/device/stage.sh stages websockets, webrtcvad, soxr and pytest-asyncio only: `streamer serve`
# also needs uvicorn, starlette and python-multipart, and the profiles py-spy. Add their wheels first:
#   pip download -q --no-deps --only-binary=:all: -d .device/common/whl uvicorn==0.54.0 starlette==1.10.0 \
#       python-multipart==0.0.34 py-spy==0.4.3
# (websockets: the version in this checkout's .venv, e.g. 15.0.1, rather than stage.sh's newest.) Python
# there writes no bytecode next to the image's packages: export PYTHONPYCACHEPREFIX=/tmp/pycache and run a
# command once before timing whole processes.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
procs=$(( $(nproc) - 2 ))
load() {  # load TAG COUNTS SERVE-OPTIONS [more bench/load.py options]
    local tag=$1 counts=$2 serve=$3; shift 3
    timeout "${LOAD_TIMEOUT:-330}" python3 bench/load.py --clients "$counts" --procs "$procs" --frame 0.1 --stagger 5 \
        --sets librivox --serve "$serve" --json "$OUT/load-$tag.json" "$@" 2>"$OUT/load-$tag.err" \
        | tee "$OUT/load-$tag.txt"
    echo "load $tag: exit ${PIPESTATUS[0]}"
}
case "${1:-part1}" in
part1)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
    timeout 180 python3 -m pytest -q -p no:cacheprovider -m cuda tests/decoding/test_step.py tests/test_engine.py \
        2>&1 | tail -15
    timeout 150 python3 bench/decode.py --device cuda --models tiny.en --batches 1,64,256 2>&1 | tail -4
    load tiny 64,128,256,384,512 "--device cuda --max-batch 256" --profile 10 --profile-dir "$OUT"
    tail -3 "$OUT"/load-tiny.err
    grep -h "client(s)\|committed" "$OUT"/load-tiny.txt
    ;;
part2)
    timeout 120 python3 bench/decode.py --device cuda --models random:base,random:large-v3-turbo --batches 1,64 \
        2>&1 | tail -5
    LOAD_TIMEOUT=170 load base 64,256 "--model random:base --device cuda --max-batch 256" --no-words
    LOAD_TIMEOUT=170 load turbo 64,256 "--model random:large-v3-turbo --device cuda --max-batch 256" --no-words
    tail -2 "$OUT"/load-base.err "$OUT"/load-turbo.err
    grep -h "client(s)" "$OUT"/load-base.txt "$OUT"/load-turbo.txt
    ;;
part3)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    timeout 70 python3 -m pytest -q -p no:cacheprovider -m cuda tests/decoding/test_step.py tests/test_engine.py \
        2>&1 | tail -3
    clip=tests/fixtures/sense_and_sensibility_01_austen_64kb-0870.wav
    TIMEFORMAT="whole process %R s"
    for flags in "" "--batch-size 8"; do
        for _ in 1; do
            echo "streamer transcribe 7 s clip --device cuda $flags:"
            time (timeout 60 python3 -m streamer transcribe "$clip" --device cuda $flags)
        done
    done
    timeout 120 python3 bench/longform.py --device cuda --minutes 10 --batch-sizes 16,64 2>&1 | tail -5
    ;;
part4)
    mkdir -p "$OUT/default" "$OUT/switch"
    LOAD_TIMEOUT=120 load host-default 512 "--device cuda --max-batch 256" --profile 10 --profile-dir "$OUT/default"
    SWITCH_INTERVAL=0.0005 PYTHONPATH="$PWD/bench/switch:$PYTHONPATH" LOAD_TIMEOUT=120 \
        load host-switch 512 "--device cuda --max-batch 256" --profile 10 --profile-dir "$OUT/switch"
    grep -h "client(s)\|committed" "$OUT"/load-host-*.txt
    ;;
esac
