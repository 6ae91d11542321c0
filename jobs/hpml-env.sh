# Sourced by jobs/*.sbatch (`hpml submit` inlines it, so RUN/slurm/*.sbatch is the whole story):
# modules, environment, CPU placement, how to launch `hpml` on every rank, and the requeue policy.
# HPML_* variables come from the script's profile block.

# This job as scontrol/scancel must name it: for an array task `<array id>_<task id>`, because
# the bare array job id names every task of the array. hpml.core.jobid.job_identity agrees.
hpml_self_id() {
  if [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
  else
    echo "${SLURM_JOB_ID:-none}"
  fi
}

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
  # One thread pool per rank, sized to the cores SLURM gave it (the profile may say otherwise).
  export OMP_NUM_THREADS="${HPML_OMP_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
  if [ -n "${HPML_TF_INTRA_THREADS:-}" ]; then export TF_NUM_INTRAOP_THREADS="${HPML_TF_INTRA_THREADS}"; fi
  if [ -n "${HPML_TF_INTER_THREADS:-}" ]; then export TF_NUM_INTEROP_THREADS="${HPML_TF_INTER_THREADS}"; fi
  if [ -z "${HPML_CONTAINER:-}" ]; then
    local venv="${HPML_VENV:-${HPML_HOME:-}/.venv}"
    # shellcheck disable=SC1091
    if [ -f "${venv}/bin/activate" ]; then source "${venv}/bin/activate"; fi
  fi
  echo "hpml: job $(hpml_self_id) (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-$(hostname)}," \
       "${SLURM_NTASKS:-1} task(s) x ${SLURM_CPUS_PER_TASK:-1} cpu(s), container: ${HPML_CONTAINER:-none}"
}

# hpml_launch ARGS...: run `hpml ARGS` on every task of the allocation.
hpml_launch() {
  local cmd=(hpml)
  if [ -n "${HPML_CONTAINER:-}" ]; then
    # Hybrid MPI: the host's srun/PMIx starts one container per rank; --nv brings the GPUs in.
    # Binds are expanded by each task: node-local $TMPDIR may differ from node to node.
    export HPML_BINDS HPML_CONTAINER
    # shellcheck disable=SC2016
    cmd=(bash -c 'exec apptainer exec --nv --bind "${HPML_BINDS}${TMPDIR:+,$TMPDIR}" "$HPML_CONTAINER" hpml "$@"' hpml)
  fi
  local launch
  if [ "${HPML_LAUNCHER:-srun}" = srun ]; then
    launch=(srun --mpi="${HPML_MPI:-pmix}" --kill-on-bad-exit=1)
    # SLURM 22.05-23.02: srun does not inherit --cpus-per-task from the job; without it each
    # rank is bound to one core.
    if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then launch+=(--cpus-per-task="${SLURM_CPUS_PER_TASK}"); fi
    if [ -n "${HPML_CPU_BIND:-}" ]; then launch+=(--cpu-bind="${HPML_CPU_BIND}"); fi
    if [ -n "${HPML_GPU_BIND:-}" ]; then launch+=(--gpu-bind="${HPML_GPU_BIND}"); fi
  else
    launch=(mpirun --map-by "slot:PE=${SLURM_CPUS_PER_TASK:-1}" --bind-to core)
  fi
  echo "hpml: launch: ${launch[*]} ${cmd[*]} $*"
  echo "hpml: threads: OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}" \
       "TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-default} TF_NUM_INTEROP_THREADS=${TF_NUM_INTEROP_THREADS:-default}"
  echo "hpml: network: $(env | grep -E '^(NCCL|PMIX|UCX|OMPI_MCA|FI)_' | sort | tr '\n' ' ')"
  "${launch[@]}" "${cmd[@]}" "$@"
}

# ---- preemption: requeue only what this job checkpointed for SLURM's warning signal ----------

hpml_preemption_traps() {  # first thing in a training script: an early signal must not kill it
  HPML_GOT_USR1=0 HPML_GOT_TERM=0 HPML_STEP=""
  trap _hpml_on_usr1 USR1
  trap _hpml_on_term TERM
}

_hpml_on_usr1() {
  HPML_GOT_USR1=1
  echo "hpml: $(date +%T) preemption signal: asking every rank to checkpoint"
  if [ -n "${HPML_STEP}" ]; then  # signalling srun itself would make it abort the step
    scancel --signal=USR1 "$(hpml_self_id)" || kill -USR1 "${HPML_STEP}" 2>/dev/null || true
  fi
}

_hpml_on_term() {  # scancel or the time limit: SLURM signals the ranks itself; never requeue
  HPML_GOT_TERM=1
  echo "hpml: $(date +%T) TERM: the job is cancelled or out of time; it will not be requeued"
}

# hpml_train_preemptible RUN_DIR HPML_TRAIN_ARGS...: train, then requeue or exit.
hpml_train_preemptible() {
  local run_dir=$1 rc=0
  shift
  hpml_launch train "$@" &
  HPML_STEP=$!
  while :; do
    wait "${HPML_STEP}" && rc=0 || rc=$?
    kill -0 "${HPML_STEP}" 2>/dev/null || break  # still running: wait was interrupted by a trap
  done
  _hpml_requeue_or_exit "${run_dir}" "${rc}"
}

# What a busy or restarting controller answers (hpml.slurm.calls.TRANSIENT, pinned by a test):
# worth another try. Anything else (the job ended meanwhile, ...) is a refusal.
_HPML_SLURM_TRANSIENT='socket timed out on send/recv operation|zero bytes were transmitted or received'
_HPML_SLURM_TRANSIENT+='|unable to contact slurm controller|communication connection failure|message send failure'
_HPML_SLURM_TRANSIENT+='|message receive failure|connection timed out|rate limit exceeded|resource temporarily unavailable'
_HPML_SLURM_TRANSIENT+='|temporarily unable to accept job|slurm job queue full|unable to create job record, try again'
_HPML_SLURM_TRANSIENT+='|job can not be altered now, try again later|controller in standby mode'
_HPML_SLURM_TRANSIENT+='|controller is in standby mode|unable to connect to database|problem talking to the database'
_HPML_SLURM_TRANSIENT+='|interrupted system call'

_hpml_slurm_transient() { [[ "${1,,}" =~ ${_HPML_SLURM_TRANSIENT} ]]; }

# _hpml_scontrol_requeue ID: `scontrol requeue Incomplete ID`, tried again while the controller is
# busy: HPML_REQUEUE_TRIES tries (5), waiting HPML_REQUEUE_DELAY (2) s, then twice as long each time.
_hpml_scontrol_requeue() {
  local id=$1 try=1 tries=${HPML_REQUEUE_TRIES:-5} delay=${HPML_REQUEUE_DELAY:-2} out
  while :; do
    if out=$(scontrol requeue Incomplete "${id}" 2>&1); then
      if [ -n "${out}" ]; then echo "${out}"; fi
      return 0
    fi
    echo "hpml: $(date +%T) scontrol requeue ${id} failed (try ${try}/${tries}): ${out:-no message}"
    if ! _hpml_slurm_transient "${out}"; then return 1; fi
    if [ "${try}" -ge "${tries}" ]; then
      echo "hpml: $(date +%T) the controller did not answer ${tries} tries to requeue ${id}; giving up"
      return 1
    fi
    sleep "${delay}"
    try=$((try + 1)) delay=$((delay * 2))
  done
}

_hpml_requeue_or_exit() {
  local marker="$1/PREEMPTED" rc=$2 id this first="" restarts=${SLURM_RESTART_COUNT:-0}
  id=$(hpml_self_id)
  this="job=${id} restart=${restarts}"
  if [ -f "${marker}" ]; then first=$(head -n 1 "${marker}"); fi
  if [ "${HPML_GOT_USR1}" = 1 ] && [ "${HPML_GOT_TERM}" = 0 ] && [ "${first}" = "${this}" ]; then
    if [ "${restarts}" -ge "${HPML_MAX_RESTARTS:-3}" ]; then
      echo "hpml: $(date +%T) restart cap reached: ${restarts} restart(s), max_restarts ${HPML_MAX_RESTARTS:-3}" \
           "(cluster profile). The checkpoint is saved; submit the job again to continue."
      exit 75
    fi
    echo "hpml: $(date +%T) checkpoint written; requeueing job ${id} (restart $((restarts + 1)))"
    trap '' TERM  # SLURM ends this run of the job now; that TERM is not a cancellation
    # Incomplete: SLURM refuses if the job meanwhile ended (cancelled, timed out).
    if _hpml_scontrol_requeue "${id}"; then exit 0; fi
    echo "hpml: scontrol refused to requeue ${id}; submit the job again to continue"
    exit 75
  fi
  if [ -n "${first}" ] && [ "${first}" != "${this}" ]; then
    echo "hpml: ignoring a stale ${marker} ('${first}'): this run (${this}) did not write it"
  elif [ -n "${first}" ]; then
    echo "hpml: checkpoint written, but no preemption signal reached this job (or it was cancelled): not requeueing"
  elif [ "${HPML_GOT_USR1}" = 1 ]; then
    echo "hpml: preemption signal received but this run wrote no checkpoint marker (exit ${rc}): not requeueing"
  fi
  exit "${rc}"
}
