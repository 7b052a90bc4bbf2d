#!/usr/bin/env bash
# Benchmark: the weight-free flow interpolator against a cross-fade and FFmpeg's minterpolate
# (mi_mode=mci) on synthetic sequences with dropped frames.
#
#   bash tools/bench_interp.sh [build-dir] [WxH (default 416x240)] [gaps (default "1 3 7")]
#
# Sequences (33 frames at 25 fps, so gaps 1, 3, 7 tile them): testsrc2 (moving parts on a
# still pattern), a mandelbrot zoom (~1.5% per frame, antialiased), a pan over a still picture (5 px right,
# 2 px down per frame). For each gap, frames 0, GAP+1, ... are kept; minterpolate gets exactly the
# kept frames at 25/(GAP+1) fps and makes 25 fps, so its frame i stands for ground-truth frame i
# (bench_interp checks that on the kept frames). minterpolate's time per interpolated frame is
# its run minus the same run with `fps=25` (frame duplication) instead, best of 3, wall and
# CPU (ffmpeg -benchmark); the filter itself is single-threaded.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
size="${2:-416x240}"
gaps="${3:-1 3 7}"
bench="$build/bench_interp"
[ -x "$bench" ] || { echo "build first: $bench is missing" >&2; exit 1; }
width="${size%x*}"
height="${size#*x}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
frames=33
ff=(ffmpeg -hide_banner -loglevel error -y)

"${ff[@]}" -f lavfi -i "testsrc2=size=$size:rate=25" -frames:v $frames \
  -f rawvideo -pix_fmt rgb24 "$tmp/testsrc2.rgb"
# Rendered at twice the size and scaled down: unfiltered, its boundary detail is per-pixel
# noise that no method could interpolate.
"${ff[@]}" -f lavfi -i "mandelbrot=size=$((width * 2))x$((height * 2)):rate=25:end_pts=100" \
  -vf "scale=$width:$height:flags=area" -frames:v $frames -f rawvideo -pix_fmt rgb24 \
  "$tmp/mandelbrot.rgb"
# The still: a detailed mandelbrot view, three times the frame size, panned by a crop.
"${ff[@]}" -f lavfi -i "mandelbrot=size=$((width * 3))x$((height * 3)):start_scale=0.05" \
  -frames:v 1 "$tmp/still.png"
"${ff[@]}" -loop 1 -i "$tmp/still.png" -vf "crop=$width:$height:x='n*5':y='n*2'" \
  -frames:v $frames -f rawvideo -pix_fmt rgb24 "$tmp/pan.rgb"

# Best (wall, CPU) seconds of three runs of ffmpeg "$@" -benchmark (rtime, utime + stime).
ffmpeg_best_of_3() {
  for _ in 1 2 3; do
    # (-benchmark reports at the info log level)
    ffmpeg -hide_banner -nostats -benchmark "$@" 2>&1 | grep -o 'utime=[0-9.]*s stime=[0-9.]*s rtime=[0-9.]*s' \
      | tr -d 'a-z=' | awk '{print $3, $1 + $2}'
  done | sort -n | awk 'NR==1{w=$1} {c=(NR==1||$2<c)?$2:c} END{print w, c}'
}

summary="$tmp/summary.txt"
for sequence in testsrc2 mandelbrot pan; do
  for gap in $gaps; do
    step=$((gap + 1))
    "${ff[@]}" -f rawvideo -pix_fmt rgb24 -s "$size" -r 25 -i "$tmp/$sequence.rgb" \
      -vf "select='not(mod(n\,$step))'" -fps_mode passthrough -f rawvideo -pix_fmt rgb24 \
      "$tmp/kept.rgb"
    input=(-f rawvideo -pix_fmt rgb24 -s "$size" -framerate "25/$step" -i "$tmp/kept.rgb")
    # One clone of the last kept frame: without it minterpolate stops GAP+1 frames early.
    "${ff[@]}" "${input[@]}" -vf "tpad=stop_mode=clone:stop=1,minterpolate=fps=25:mi_mode=mci" \
      -f rawvideo -pix_fmt rgb24 "$tmp/minterp.rgb"
    # minterpolate's time: its run minus the same run with frame duplication (fps=25).
    read -r mi_wall mi_cpu < <(ffmpeg_best_of_3 "${input[@]}" \
      -vf "tpad=stop_mode=clone:stop=1,minterpolate=fps=25:mi_mode=mci" -f null -)
    read -r dup_wall dup_cpu < <(ffmpeg_best_of_3 "${input[@]}" \
      -vf "tpad=stop_mode=clone:stop=1,fps=25" -f null -)
    interpolated=$(( (frames - 1) / step * gap ))
    mi_ms=$(awk -v a="$mi_wall" -v b="$dup_wall" -v n="$interpolated" 'BEGIN{printf "%.2f", 1000*(a-b)/n}')
    mi_cpu_ms=$(awk -v a="$mi_cpu" -v b="$dup_cpu" -v n="$interpolated" 'BEGIN{printf "%.2f", 1000*(a-b)/n}')
    "$bench" "$tmp/$sequence.rgb" "$size" "$gap" "$tmp/minterp.rgb" --label "$sequence/g$gap" \
      --other-name minterpolate --other-ms "$mi_ms" --other-cpu-ms "$mi_cpu_ms" --threads "$(nproc)" \
      | tee -a "$summary"
  done
done
echo
echo "== summary ($size; PSNR/SSIM means over the dropped frames; ms per interpolated frame) =="
grep -v '^#' "$summary" | grep -v '^sequence' | awk '
  { key=$2; n[key]++; py[key]+=$3; pr[key]+=$4; ss[key]+=$5; ms[key]+=$6; ms1[key]+=$7; cpu[key]+=$8 }
  END { printf "%-13s %8s %9s %7s %10s %10s %10s\n", "method", "PSNR-Y", "PSNR-RGB", "SSIM-Y",
               "ms/frame", "ms/frame@1", "cpu_ms@1";
        for (k in n) printf "%-13s %8.2f %9.2f %7.4f %10.2f %10.2f %10.2f\n", k, py[k]/n[k],
                            pr[k]/n[k], ss[k]/n[k], ms[k]/n[k], ms1[k]/n[k], cpu[k]/n[k] }'
