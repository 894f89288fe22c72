#!/usr/bin/env bash
# Run jaxdistill on every worker of a Cloud TPU VM slice (one JAX process per worker).
#
#   export TPU_NAME=jaxdistill-v5p ZONE=us-east5-a ACCELERATOR=v5p-32 RUNTIME=v2-alpha-tpuv5
#   launch/tpu_pod.sh up                                   # create the slice, or reuse it if it exists
#   launch/tpu_pod.sh install                              # copy this checkout to every worker, pip install
#   launch/tpu_pod.sh fetch Qwen/Qwen3-8B Qwen/Qwen3-0.6B  # download weights on every worker
#   launch/tpu_pod.sh run configs/qwen3_8b_gsm8k.yaml eta=-1 output_dir=/mnt/shared/runs/undistillable
#   launch/tpu_pod.sh down                                 # delete the slice
#
# Every worker runs the same command; jax.distributed finds the other workers through the TPU
# metadata (distributed.mode=auto). Checkpoints are written by all workers together, so output_dir
# must be a folder every worker sees (a Filestore/NFS mount or a gcsfuse-mounted bucket); metrics and
# the exported teacher are written by worker 0. No credentials are read or stored here: gcloud uses the
# account you logged in with (gcloud auth login); gated models need `huggingface-cli login` on workers.
set -euo pipefail

usage() {  # the comment block at the top of this file
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

case "${1:-}" in
  up | install | fetch | run | down) ;;
  -h | --help | help) usage 0 ;;
  *) usage 2 ;;
esac

: "${TPU_NAME:?set TPU_NAME, the name of the TPU VM slice (see launch/README.md)}"
: "${ZONE:?set ZONE, the zone of the slice, e.g. us-east5-a}"
ACCELERATOR="${ACCELERATOR:-v5p-32}"
RUNTIME="${RUNTIME:-v2-alpha-tpuv5}"
REMOTE_DIR="${REMOTE_DIR:-jaxdistill}"         # checkout on each worker, relative to its home
REMOTE_VENV="${REMOTE_VENV:-jaxdistill-venv}"  # virtual environment on each worker, relative to its home
EXTRA_CREATE_FLAGS="${EXTRA_CREATE_FLAGS:-}"   # e.g. "--spot" or "--network=my-net"
# PROJECT: gcloud project (default: gcloud's configured one); DRY_RUN=1: print the gcloud commands only

gcloud_tpu=(gcloud compute tpus tpu-vm)
if [[ "${DRY_RUN:-0}" == 1 ]]; then  # print the gcloud commands instead of running them
  gcloud_tpu=(echo gcloud compute tpus tpu-vm)
fi
location=(--zone "$ZONE")
if [[ -n "${PROJECT:-}" ]]; then
  location+=(--project "$PROJECT")
fi

on_all_workers() {
  "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${location[@]}" --worker=all --command "$1"
}

slice_exists() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    return 1
  fi
  "${gcloud_tpu[@]}" describe "$TPU_NAME" "${location[@]}" --format="value(state)" >/dev/null 2>&1
}

cmd_up() {
  if slice_exists; then
    echo "reusing TPU slice $TPU_NAME in $ZONE"
    return
  fi
  local extra=()
  if [[ -n "$EXTRA_CREATE_FLAGS" ]]; then
    read -r -a extra <<<"$EXTRA_CREATE_FLAGS"
  fi
  "${gcloud_tpu[@]}" create "$TPU_NAME" "${location[@]}" --accelerator-type "$ACCELERATOR" \
    --version "$RUNTIME" "${extra[@]}"
}

cmd_install() {
  local repo archive
  repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
  archive="$(mktemp -t jaxdistill-XXXXXX.tar.gz)"
  if [[ -n "$(git -C "$repo" status --porcelain)" ]]; then
    echo "warning: uncommitted changes are not copied (git archive HEAD); commit them first" >&2
  fi
  git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
  "${gcloud_tpu[@]}" scp "$archive" "$TPU_NAME:jaxdistill.tar.gz" "${location[@]}" --worker=all
  rm -f "$archive"
  on_all_workers "set -e
    rm -rf \$HOME/$REMOTE_DIR && mkdir -p \$HOME/$REMOTE_DIR && tar -xzf \$HOME/jaxdistill.tar.gz -C \$HOME/$REMOTE_DIR
    python3 -m venv \$HOME/$REMOTE_VENV
    \$HOME/$REMOTE_VENV/bin/pip install --quiet --upgrade pip
    \$HOME/$REMOTE_VENV/bin/pip install --quiet \$HOME/$REMOTE_DIR'[tpu]' 'huggingface_hub[cli]'
    \$HOME/$REMOTE_VENV/bin/python -c 'import jax, jaxdistill; print(\"jax\", jax.__version__, \"ready\")'"
}

cmd_fetch() {
  if [[ $# -eq 0 ]]; then
    echo "fetch needs hub model names, e.g. Qwen/Qwen3-8B Qwen/Qwen3-0.6B" >&2
    exit 2
  fi
  local model script=""
  for model in "$@"; do
    # into <worker home>/REMOTE_DIR/<hub name>: configs that name the hub repo find the folder
    script+="\$HOME/$REMOTE_VENV/bin/huggingface-cli download $(printf '%q' "$model") --local-dir \$HOME/$REMOTE_DIR/$(printf '%q' "$model") && "
  done
  on_all_workers "set -e; ${script}true"
}

cmd_run() {
  if [[ $# -eq 0 ]]; then
    echo "run needs a config file, e.g. configs/qwen3_8b_gsm8k.yaml (plus key=value overrides)" >&2
    exit 2
  fi
  local config="$1"
  shift
  local args
  args="$(printf '%q ' --config "$config" distributed.mode=auto progress=false "$@")"
  on_all_workers "cd \$HOME/$REMOTE_DIR && \$HOME/$REMOTE_VENV/bin/python -m jaxdistill.calibrate $args 2>&1 | tee -a \$HOME/jaxdistill-calibrate.log"
}

cmd_down() {
  "${gcloud_tpu[@]}" delete "$TPU_NAME" "${location[@]}" --quiet
}

command="$1"
shift
case "$command" in
  up) cmd_up ;;
  install) cmd_install ;;
  fetch) cmd_fetch "$@" ;;
  run) cmd_run "$@" ;;
  down) cmd_down ;;
esac
