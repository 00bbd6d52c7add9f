#!/usr/bin/env bash
# Runs the default ablation (configs/ablation.py: 3 upsamplers x 2 D activations x 5 seeds) on
# one dataset as two processes, each pinned to one of this machine's 2 cores and running half of
# the arms (`--arm`), then builds the report. Same runs and report as the single command
#   python -m gan.main --config=configs/ablation.py --workdir=DIR --config.dataset.name=NAME
# but ~13% more throughput on this CPU (DESIGN.md: two one-core processes beat one two-core one).
# Usage: experiments/ablation/run.sh DATASET WORKDIR [extra --config overrides]
set -euo pipefail
dataset=$1 workdir=$2
shift 2
common=(--config=configs/ablation.py "--workdir=$workdir" "--config.dataset.name=$dataset" "$@")
start=$(date +%s)
(for arm in 0 2 4; do taskset -c 0 python -m gan.main "${common[@]}" --arm=$arm; done) &
(for arm in 1 3 5; do taskset -c 1 python -m gan.main "${common[@]}" --arm=$arm; done) &
wait
python -m gan.main "${common[@]}" --report_only
echo "wall time: $(( $(date +%s) - start )) s"
