#!/usr/bin/env bash
# Download (here, where pip reaches the package registries) the wheels that scripts/device_check.sh needs on the
# GPU machine of the device tool, into .whl/ (in .gitignore; name it in the run's `carry`). That machine's image
# has torch, accelerate, safetensors, tokenizers, pyarrow and pandas but no minigrid, gymnasium or datasets, and
# transformers/huggingface_hub older than our tested ranges; it has Python 3.12 and cannot fetch anything itself.
# Versions: exactly the ones installed in this .venv (the tested set), no dependencies resolved beyond this list.
#   ./scripts/device_wheels.sh        # then: run(command="scripts/device_check.sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(minigrid gymnasium farama-notifications pygame-ce datasets dill multiprocess transformers huggingface-hub
          httpx2 httpcore2 truststore idna click fsspec hf-xet regex)
[ -x .venv/bin/python ] || { echo "no .venv: run ./scripts/setup.sh first (the versions come from it)" >&2; exit 2; }
pins=()
for name in "${PACKAGES[@]}"; do
  pins+=("$name==$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
rm -rf .whl.partial && mkdir .whl.partial
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl.partial "${pins[@]}"
rm -rf .whl && mv .whl.partial .whl
du -sh .whl; ls .whl
