#!/usr/bin/env bash
# The README's first command: set up (install, build), print the built-in demonstration, then open the viewer
# on its guided tour, which ends on the shipped MQAR checkpoint. Without a display the viewer writes gdn2-viewer.png instead (under xvfb-run).
# Options are passed to the viewer, e.g. scripts/run.sh --scenario soft-update --compare
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" "$root/build" >&2
"$root/build/reference/gdn2" demo
cd "$root"
exec "$root/build/viewer/gdn2-viewer" "$@"
