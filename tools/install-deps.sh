#!/usr/bin/env bash
# Installs every Debian package beatfarm needs to build, run and test.
# Usage: sudo bash tools/install-deps.sh   (root on the CI and developer machines)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(
  # build
  build-essential cmake ninja-build ccache pkg-config git
  # core libraries
  libboost-program-options-dev
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev ffmpeg
  nlohmann-json3-dev
  libsentencepiece-dev
  libtorch-dev libopenblas0-pthread
  # tests
  libgtest-dev libgmock-dev
  # the safetensors header fuzzer (libFuzzer)
  clang libfuzzer-14-dev
  # the Slurm test: a single-node cluster (slurmctld, slurmd, sbatch, srun) with munge
  slurm-wlm munge
  # beat-tracker evaluation and test audio
  python3-mir-eval sox aubio-tools
)

# Skip the (slow) apt round trip when everything is already there.
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
