#!/usr/bin/env bash
# Adaptation on unseen dynamics: MAML vs the fine-tune baselines vs random initialisation
# on the ood split of dynamics families (README section "Adaptation on unseen dynamics").
#
# usage: scripts/unseen_dynamics.sh OUT_DIR [FAMILY...]
#   default families: HalfCheetahRandParams HalfCheetahCrippled
# Sizes are small on purpose (a shared 2-core CPU); override them with the variables below.
# Every command and its wall-clock time goes to OUT_DIR/commands.log. Steps whose output
# already exists (a run's config.json, an eval_ood.json) are skipped, so the script can be
# rerun to complete an interrupted or extended experiment.
set -euo pipefail

OUT=${1:?usage: scripts/unseen_dynamics.sh OUT_DIR [FAMILY...]}
shift
if [ $# -eq 0 ]; then FAMILIES=(HalfCheetahRandParams HalfCheetahCrippled); else FAMILIES=("$@"); fi

SEED=${SEED:-0}
MAML_ITERATIONS=${MAML_ITERATIONS:-20}      # paper: 100-500
MAML_TASKS=${MAML_TASKS:-10}                # paper: 40
MAML_EPISODES=${MAML_EPISODES:-10}          # paper: 20
PPO_TIMESTEPS=${PPO_TIMESTEPS:-100000}
EVAL_TASKS=${EVAL_TASKS:-10}                # protocol: 40
EVAL_EPISODES=${EVAL_EPISODES:-10}          # protocol: 20
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

mkdir -p "$OUT"
LOG="$OUT/commands.log"

timed() {  # run a metarl command, log it with its wall-clock seconds
    local start end
    start=$(date +%s.%N)
    metarl "$@"
    end=$(date +%s.%N)
    printf 'metarl %s  # %s s\n' "$*" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')" | tee -a "$LOG"
}

train() {  # train RUN_DIR ARGS...: skipped when RUN_DIR already holds a run
    local run=$1
    shift
    if [ -f "$run/config.json" ]; then echo "skip: $run exists"; else timed train "$@" --out "$run"; fi
}

for family in "${FAMILIES[@]}"; do
    dir="$OUT/$family"
    mkdir -p "$dir"
    train "$dir/maml" maml --env "$family" --preset fast --horizon 200 \
        --meta-batch-size "$MAML_TASKS" --episodes-per-task "$MAML_EPISODES" \
        --iterations "$MAML_ITERATIONS" --seed "$SEED" --device cpu
    train "$dir/random_init" random-init --like "$dir/maml"
    # the MAML paper's "pretrained" row: one policy trained on the task mixture, same budget
    train "$dir/pretrain" pretrain --env "$family" --preset fast \
        --meta-batch-size "$MAML_TASKS" --episodes-per-task "$MAML_EPISODES" \
        --iterations "$MAML_ITERATIONS" --seed "$SEED" --device cpu --no-progress
    train "$dir/finetune_ppo" finetune --env "$family" --timesteps "$PPO_TIMESTEPS" \
        --seed "$SEED" --device cpu
    train "$dir/finetune_ppo_frozen_body" finetune --env "$family" \
        --timesteps "$PPO_TIMESTEPS" --seed "$SEED" --device cpu --freeze 2 --new-head
    runs=(maml pretrain finetune_ppo finetune_ppo_frozen_body random_init)
    for run in "${runs[@]}"; do
        if [ -f "$dir/$run/eval_ood.json" ]; then echo "skip: $dir/$run/eval_ood.json exists"; continue; fi
        timed evaluate "$dir/$run" --split ood --num-tasks "$EVAL_TASKS" \
            --episodes-per-step "$EVAL_EPISODES" --device cpu --no-progress
    done
    timed compare "${runs[@]/#/$dir/}" --split ood --out "$dir/compare_ood"
done
