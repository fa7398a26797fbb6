#!/usr/bin/env bash
# The README's first command: set up (install, build), then run the main job, the built-in demonstration.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" "$root/build" >&2
exec "$root/build/reference/gdn2" demo "$@"
