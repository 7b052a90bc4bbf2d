#!/usr/bin/env bash
# Benchmark: the whole preview job on a 60 s track at 832x480, 16 fps, on 1 and 2 ranks.
# Prints wall time and each rank's peak RSS. Usage: bash tools/bench_preview.sh [build-dir]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
beatfarm="$build/beatfarm"
[ -x "$beatfarm" ] || { echo "build first: $beatfarm is missing" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# 60 s of music: the bundled 20 s example three times.
ffmpeg -hide_banner -loglevel error -stream_loop 2 -i "$root/tests/data/example_house_126.ogg" \
  -t 60 -c:a flac "$tmp/song60.flac"
mpirun_cmd=(mpirun --allow-run-as-root --oversubscribe)
# The preview job as the README runs it (--config preview: libx264 superfast), and with the
# final encode at the default preset (medium), which is what a Wan job uses.
printf "%-16s %-6s %10s %14s %s\n" encode ranks wall_s peak_rss_mb "per-rank peak RSS (MB)"
for variant in "preview:--config preview" "medium:--backend preview"; do
name="${variant%%:*}"
options="${variant#*:}"
for ranks in 1 2; do
  work="$tmp/work_${name}_$ranks"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "${mpirun_cmd[@]}" -np "$ranks" "$beatfarm" $options --audio "$tmp/song60.flac" \
    --output "$tmp/out_${name}_$ranks.mp4" --work-dir "$work" --width 832 --height 480 --fps 16 \
    >"$tmp/log_$ranks.txt" 2>&1 || { cat "$tmp/log_$ranks.txt"; exit 1; }
  end=$(date +%s.%N)
  rss=$(grep -ho "peak RSS [0-9.]* MB" "$work"/logs/rank_*.log | awk '{print $3}' | paste -sd' ')
  max=$(echo "$rss" | tr ' ' '\n' | sort -n | tail -1)
  printf "%-16s %-6s %10.2f %14s %s\n" "$name" "$ranks" "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" "$max" "$rss"
  grep -h '"\(analysis\|render\|assemble\|total\)_seconds"' "$work/report.json" | tr -d ' ,' | paste -sd' '
done
done
