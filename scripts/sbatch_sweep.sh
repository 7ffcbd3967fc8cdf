#!/bin/bash
# A SLURM job array of sweep workers on one PostgreSQL study: each array task is one worker, and each
# worker runs every trial on all GPUs of its node(s) as one srun step with one task per GPU (rank 0 pops
# trials and records them; the other ranks train with it: study/trial_group.py). docs/cluster.md explains.
#
#   export STUDY_SWEEP_STORAGE='postgresql://user:password@dbhost:5432/optuna'   # read from the environment,
#                                                                                # never put on a command line
#   study plan sweeps/paper_long_document_ar.yaml --gpu h100                    # what it will cost
#   sbatch --array=0-5 scripts/sbatch_sweep.sh sweeps/paper_long_document_ar.yaml  # 6 workers, 6 cells
#   study status paper_long_document_ar --storage "$STUDY_SWEEP_STORAGE"
#
# Trials use trainer.devices = --ntasks-per-node and trainer.num_nodes = --nodes (from the environment, whatever
# the sweep file says). Multi-node trials: --nodes=2. Resume = sbatch the same array again.
#SBATCH --job-name=study-sweep
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%A_%a.out
#SBATCH --export=ALL
set -euo pipefail
SPEC=${1:?usage: sbatch --array=0-N scripts/sbatch_sweep.sh SWEEP_FILE [study sweep options]}
shift
: "${STUDY_SWEEP_STORAGE:?export STUDY_SWEEP_STORAGE=postgresql://... before sbatch (one storage for all workers)}"
cd "${SLURM_SUBMIT_DIR:-.}"
mkdir -p logs
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-8} TOKENIZERS_PARALLELISM=false
export WANDB_MODE=${WANDB_MODE:-offline}            # online if the compute nodes reach wandb.ai
# Array tasks start together and each creates/resumes the study and queues missing cells: stagger them
# (a cell queued twice anyway is caught and runs once).
sleep $(( ${SLURM_ARRAY_TASK_ID:-0} * 5 ))
# --kill-on-bad-exit: if one rank dies the step ends, instead of the others waiting in a collective.
srun --kill-on-bad-exit=1 --cpu-bind=none "$PY" -m study.cli sweep "$SPEC" "$@"
