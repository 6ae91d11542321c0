# Sourced by jobs/*.sbatch: modules, environment, and how to launch `hpml` on every rank.
# HPML_* variables come from the script's profile block (rendered by `hpml submit`).

hpml_setup() {
  if [ -n "${HPML_MODULES:-}" ]; then
    if command -v module >/dev/null 2>&1; then
      module purge && module load ${HPML_MODULES}
    else
      echo "hpml: modules '${HPML_MODULES}' requested but this node has no 'module' command" >&2
    fi
  fi
  export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
  if [ "$(id -u)" = 0 ]; then  # test clusters run jobs as root; Open MPI refuses otherwise
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  if [ -z "${HPML_CONTAINER:-}" ] && [ -f "${HPML_HOME}/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "${HPML_HOME}/.venv/bin/activate"
  fi
  echo "hpml: job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-$(hostname)}," \
       "${SLURM_NTASKS:-1} task(s), container: ${HPML_CONTAINER:-none}"
}

# hpml_launch ARGS...: run `hpml ARGS` on every task of the allocation.
hpml_launch() {
  local cmd=(hpml)
  if [ -n "${HPML_CONTAINER:-}" ]; then
    # Hybrid MPI: the host's srun/PMIx starts one container per rank; --nv brings the GPUs in.
    cmd=(apptainer exec --nv --bind "${HPML_HOME}" "${HPML_CONTAINER}" hpml)
  fi
  if [ "${HPML_LAUNCHER:-srun}" = srun ]; then
    srun --mpi="${HPML_MPI:-pmix}" --kill-on-bad-exit=1 "${cmd[@]}" "$@"
  else
    mpirun "${cmd[@]}" "$@"
  fi
}
