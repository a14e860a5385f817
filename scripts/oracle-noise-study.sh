#!/usr/bin/env bash
# Keypoint rewards under each way the oracle can be wrong: pick_cube trained on the built-in
# oracle's keypoints with NOISE of its answers wrong in one MODE, for a fixed step budget, then
# judged on the held-out seeds. Prints one line per run (held-out success, and the share of
# training episodes the keypoint stage dropped for want of a usable, liftable answer) and writes
# OUT/table.md.
#
#   scripts/oracle-noise-study.sh OUT [STEPS] [NOISES] [MODES] [SEED]
#
# Defaults: 20000 steps, noises "0.1 0.3", every mode, seed 0. A reference run with no noise is
# included. `reflex` must be on PATH (cargo build --release -p reflex-cli; target/release).
set -euo pipefail
out=${1:?usage: $0 OUT [STEPS] [NOISES] [MODES] [SEED]}
steps=${2:-20000}
noises=${3:-"0.1 0.3"}
modes=${4:-"random wrong-part distractor wrong-way left-right depth hedge"}
seed=${5:-0}
mkdir -p "$out"

run() { # name noise mode
    local dir="$out/$1"
    if [[ -f "$dir/summary.json" ]]; then
        echo "$1: finished before, kept" >&2
        return
    fi
    cat >"$out/$1.toml" <<EOF
task = "pick_cube"
seed = $seed
max_env_steps = $steps
target_success = 2.0
eval_every = 10000
eval_episodes = 50
[reward]
source = "vlm-keypoints"
[reward.oracle]
noise = $2
noise_modes = ["$3"]
EOF
    reflex train --config "$out/$1.toml" --out "$dir" --minutes 60 >"$out/$1.log" 2>&1
}

run clean 0.0 random
for noise in $noises; do
    for mode in $modes; do
        run "$mode-$noise" "$noise" "$mode"
    done
done

{
    echo "| oracle answers wrong | held out (200) | base (50) | episodes dropped by the keypoint stage | minutes |"
    echo "|---|---|---|---|---|"
    for s in "$out"/*/summary.json; do
        name=$(basename "$(dirname "$s")")
        jq -r --arg name "$name" '
            .reward_stage.keypoints as $r
            | ($r.episodes // 0) as $eps
            | (if $eps > 0 then 100 * ($eps - ($r.planned // 0)) / $eps else 0 end) as $drop
            | "| \($name) | \(1000 * .heldout.success_rate | round / 10)% "
              + "| \(1000 * .base_success_rate | round / 10)% "
              + "| \($drop * 10 | round / 10)% of \($eps) "
              + "| \(.wall_s / 60 * 10 | round / 10) |"' "$s"
    done
} | tee "$out/table.md"
