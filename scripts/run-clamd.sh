#!/usr/bin/env bash
# Run Debian's clamd in the foreground on a private signature database and socket.
#   bash scripts/run-clamd.sh DIR [OPTION VALUE]...
# DIR/db holds the signature files (e.g. an .hsb hash signature or an .ndb body
# signature); clamd listens on DIR/clamd.sock, logs to DIR/clamd.log and keeps
# its temporary files in DIR. OPTION VALUE pairs replace the defaults of the generated
# DIR/clamd.conf (e.g. StreamMaxLength 1M). The tests and bench/ start clamd
# this way, since official signature updates cannot be fetched where they run;
# a production clamd uses Debian's service and freshclam (docs/deployment.md).
set -euo pipefail

dir=${1:?usage: run-clamd.sh DIR [OPTION VALUE]...}
shift
dir=$(cd "$dir" && pwd)
[ -d "$dir/db" ] || { echo "run-clamd.sh: $dir/db (the signature database) is missing" >&2; exit 2; }
CLAMD=${CLAMD:-/usr/sbin/clamd}
[ -x "$CLAMD" ] || { echo "run-clamd.sh: $CLAMD not found (apt-get install clamav-daemon)" >&2; exit 2; }

# OPTION VALUE pairs from the command line replace the defaults below.
declare -A opt=(
  [DatabaseDirectory]="$dir/db"
  [LocalSocket]="$dir/clamd.sock"
  [LocalSocketMode]=600
  [Foreground]=yes
  [LogFile]="$dir/clamd.log"
  [PidFile]="$dir/clamd.pid"
  [TemporaryDirectory]="$dir"
  # Scan whole uploads, as large as sessup.upload.max_file_size may allow
  # (clamd scans at most 2 GiB - 1 of one file).
  [StreamMaxLength]=4000M
  [MaxScanSize]=4000M
  [MaxFileSize]=2000M
  [SelfCheck]=0
)
while [ $# -ge 2 ]; do opt[$1]=$2; shift 2; done
for key in "${!opt[@]}"; do echo "$key ${opt[$key]}"; done > "$dir/clamd.conf"

exec "$CLAMD" --config-file="$dir/clamd.conf"
