#!/usr/bin/env bash
# Start the predictor the way ModelArts' custom-image deployment expects: HTTP on $PORT (8080),
# on every interface, the package from $MODEL_DIR (/home/mind/model, where the platform puts
# an imported model). The platform's gateway checks callers' tokens; pass SERVICE_AUTH_TOKEN
# to have the server check one too.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL_DIR="${MODEL_DIR:-/home/mind/model}"
PORT="${PORT:-8080}"
if [ ! -f "$MODEL_DIR/saved_model.pb" ]; then
    echo "boot.sh: $MODEL_DIR holds no saved_model.pb: build the image with the package in" \
         "./model, or set MODEL_DIR to the folder train.py wrote (<train_url>/model)" >&2
    exit 2
fi
exec python "$HERE/customize_service.py" --model_dir "$MODEL_DIR" --host 0.0.0.0 \
    --port "$PORT" "$@"
