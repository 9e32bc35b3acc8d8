#!/usr/bin/env bash
# Fine-tune baselines vs MAML on HalfCheetahVel / HalfCheetahDir (README "Fine-tune baselines").
#
# usage: scripts/finetune_baselines.sh OUT_DIR [FAMILY...]
#   default families: HalfCheetahVel HalfCheetahDir
# For each family: the MAML paper's pretrained baseline (`metarl train pretrain`, TRPO on the
# task mixture, adapted with MAML's inner steps), stable-baselines3 PPO pretrained on the mixture
# and fine-tuned per task (`metarl train finetune`), and, with MAML_ITERATIONS > 0, MAML at the
# same preset and iterations as the pretrained baseline. All are evaluated on the same unseen
# test tasks (the protocol's fixed evaluation seed) with 20 episodes x horizon per adaptation
# step, and compared beside the paper's rows (metarl/data/maml_paper_returns.json).
# Sizes are small on purpose (a shared 2-core CPU); override them with the variables below.
# Every command and its wall-clock time goes to OUT_DIR/commands.log; steps whose output
# exists already are skipped, so the script can be rerun to complete an interrupted experiment.
set -euo pipefail

OUT=${1:?usage: scripts/finetune_baselines.sh OUT_DIR [FAMILY...]}
shift
if [ $# -eq 0 ]; then FAMILIES=(HalfCheetahVel HalfCheetahDir); else FAMILIES=("$@"); fi

SEED=${SEED:-0}
PRESET=${PRESET:-fast}                      # MAML preset: fast = 20 tasks x 10 episodes per batch
PRETRAIN_ITERATIONS=${PRETRAIN_ITERATIONS:-20}
META_BATCH_SIZE=${META_BATCH_SIZE:-10}      # tasks per iteration (paper: 40)
EPISODES_PER_TASK=${EPISODES_PER_TASK:-10}  # MAML's per batch; pretraining samples twice as many (paper: 20)
MAML_ITERATIONS=${MAML_ITERATIONS:-0}       # 0: no MAML run here (paper: 100-475 iterations)
PPO_TIMESTEPS=${PPO_TIMESTEPS:-100000}
EVAL_TASKS=${EVAL_TASKS:-10}                # protocol: 40
REFERENCE=${REFERENCE:-metarl/data/maml_paper_returns.json}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

mkdir -p "$OUT"
LOG="$OUT/commands.log"

timed() {  # run a metarl command, log it with its wall-clock seconds
    local start end
    start=$(date +%s.%N)
    python -m metarl.cli "$@"
    end=$(date +%s.%N)
    printf 'metarl %s  # %s s\n' "$*" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')" | tee -a "$LOG"
}

train() {  # train RUN_DIR ARGS...: skipped when RUN_DIR already holds a finished run
    local run=$1
    shift
    if [ -f "$run/config.json" ]; then echo "skip: $run exists"; else timed train "$@" --out "$run"; fi
}

evaluate() {  # evaluate RUN_DIR: skipped when eval_test.json exists
    if [ -f "$1/eval_test.json" ]; then echo "skip: $1/eval_test.json exists"; else
        timed evaluate "$1" --split test --num-tasks "$EVAL_TASKS" --device cpu --no-progress; fi
}

for family in "${FAMILIES[@]}"; do
    dir="$OUT/$family"
    runs=()
    train "$dir/pretrain" pretrain --env "$family" --preset "$PRESET" --iterations "$PRETRAIN_ITERATIONS" \
        --meta-batch-size "$META_BATCH_SIZE" --episodes-per-task "$EPISODES_PER_TASK" --seed "$SEED" --device cpu \
        --no-progress
    evaluate "$dir/pretrain"
    runs+=("$dir/pretrain")
    train "$dir/finetune_ppo" finetune --env "$family" --algo ppo --timesteps "$PPO_TIMESTEPS" --seed "$SEED" \
        --device cpu
    evaluate "$dir/finetune_ppo"
    runs+=("$dir/finetune_ppo")
    if [ "$MAML_ITERATIONS" -gt 0 ]; then
        train "$dir/maml" maml --env "$family" --preset "$PRESET" --iterations "$MAML_ITERATIONS" \
            --meta-batch-size "$META_BATCH_SIZE" --episodes-per-task "$EPISODES_PER_TASK" --seed "$SEED" \
            --device cpu --no-progress
        evaluate "$dir/maml"
        runs+=("$dir/maml")
    fi
    python -m metarl.cli compare "${runs[@]}" --split test --out "$dir/comparison" --reference "$REFERENCE"
done
