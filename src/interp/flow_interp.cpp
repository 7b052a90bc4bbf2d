#include "interp/flow_interp.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/error.h"

namespace beatfarm::interp {
namespace {

// Rows per parallel task: small images stay on one thread (task start-up would dominate).
constexpr int64_t kRowGrain = 16;

// One gray float image [H, W], intensities 0..255.
struct Plane {
  int width = 0;
  int height = 0;
  std::vector<float> v;  // [H, W]

  Plane() = default;
  Plane(int h, int w) : width(w), height(h), v(static_cast<size_t>(h) * w, 0.0f) {}
  float* row(int y) { return v.data() + static_cast<size_t>(y) * width; }
  const float* row(int y) const { return v.data() + static_cast<size_t>(y) * width; }
  float at(int y, int x) const { return v[static_cast<size_t>(y) * width + x]; }
};

template <typename Fn>
void parallel_rows(int rows, Fn&& fn) {
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t y = begin; y < end; ++y) fn(static_cast<int>(y));
  });
}

void check_frame(const Frame& frame, const char* name) {
  if (frame.height <= 0 || frame.width <= 0)
    throw InputError(
        str("interpolation: frame '", name, "' is empty (", frame.width, "x", frame.height, ")"));
  size_t expected = static_cast<size_t>(frame.height) * frame.width * 3;
  if (frame.rgb.size() != expected)
    throw InputError(str("interpolation: frame '", name, "' holds ", frame.rgb.size(),
                         " bytes, expected ", expected, " for ", frame.width, "x", frame.height,
                         " RGB"));
}

void check_options(const FlowOptions& options) {
  if (options.patch_size < 1 || options.patch_stride < 1 || options.patch_iterations < 0 ||
      options.finest_level < 0 || options.coarse_search_radius < 0 || !(options.occlusion_px > 0) ||
      !(options.occlusion_relative >= 0))
    throw InputError(str("interpolation options: patch size ", options.patch_size, ", stride ",
                         options.patch_stride, ", iterations ", options.patch_iterations,
                         ", finest level ", options.finest_level, ", search radius ",
                         options.coarse_search_radius, ", occlusion threshold ",
                         options.occlusion_px, " + ", options.occlusion_relative,
                         " * |flow|: sizes must be >= 1, the others >= 0 (threshold > 0)"));
}

void check_pair(const Frame& from, const Frame& to) {
  check_frame(from, "from");
  check_frame(to, "to");
  if (from.width != to.width || from.height != to.height)
    throw InputError(str("interpolation: frame sizes differ: from is ", from.width, "x",
                         from.height, ", to is ", to.width, "x", to.height));
}

// Bilinear sample with edge pixels repeated outside.
inline float sample_clamped(const Plane& p, float x, float y) {
  x = std::min(std::max(x, 0.0f), static_cast<float>(p.width - 1));
  y = std::min(std::max(y, 0.0f), static_cast<float>(p.height - 1));
  int x0 = static_cast<int>(x);
  int y0 = static_cast<int>(y);
  int x1 = std::min(x0 + 1, p.width - 1);
  int y1 = std::min(y0 + 1, p.height - 1);
  float fx = x - x0;
  float fy = y - y0;
  const float* r0 = p.row(y0);
  const float* r1 = p.row(y1);
  float top = r0[x0] + fx * (r0[x1] - r0[x0]);
  float bottom = r1[x0] + fx * (r1[x1] - r1[x0]);
  return top + fy * (bottom - top);
}

// The same on a [H, W, 2] flow buffer: both components.
inline void sample_flow(const FlowField& f, float x, float y, float& u, float& v) {
  x = std::min(std::max(x, 0.0f), static_cast<float>(f.width - 1));
  y = std::min(std::max(y, 0.0f), static_cast<float>(f.height - 1));
  int x0 = static_cast<int>(x);
  int y0 = static_cast<int>(y);
  int x1 = std::min(x0 + 1, f.width - 1);
  int y1 = std::min(y0 + 1, f.height - 1);
  float fx = x - x0;
  float fy = y - y0;
  const float* d = f.uv.data();
  size_t i00 = (static_cast<size_t>(y0) * f.width + x0) * 2;
  size_t i01 = (static_cast<size_t>(y0) * f.width + x1) * 2;
  size_t i10 = (static_cast<size_t>(y1) * f.width + x0) * 2;
  size_t i11 = (static_cast<size_t>(y1) * f.width + x1) * 2;
  float w00 = (1 - fx) * (1 - fy), w01 = fx * (1 - fy), w10 = (1 - fx) * fy, w11 = fx * fy;
  u = w00 * d[i00] + w01 * d[i01] + w10 * d[i10] + w11 * d[i11];
  v = w00 * d[i00 + 1] + w01 * d[i01 + 1] + w10 * d[i10 + 1] + w11 * d[i11 + 1];
}

// Bilinear RGB sample of an interleaved uint8 frame [h, w, 3], edges repeated; out[3] in
// 0..255.
inline void sample_rgb(const uint8_t* __restrict rgb, int w, int h, float x, float y,
                       float* __restrict out) {
  x = std::min(std::max(x, 0.0f), static_cast<float>(w - 1));
  y = std::min(std::max(y, 0.0f), static_cast<float>(h - 1));
  int x0 = static_cast<int>(x);
  int y0 = static_cast<int>(y);
  int step_x = x0 + 1 < w ? 3 : 0;
  size_t step_y = y0 + 1 < h ? static_cast<size_t>(w) * 3 : 0;
  float fx = x - x0;
  float fy = y - y0;
  const uint8_t* p00 = rgb + (static_cast<size_t>(y0) * w + x0) * 3;
  const uint8_t* p10 = p00 + step_y;
  float w00 = (1 - fx) * (1 - fy), w01 = fx * (1 - fy), w10 = (1 - fx) * fy, w11 = fx * fy;
  for (int c = 0; c < 3; ++c)
    out[c] = w00 * p00[c] + w01 * p00[c + step_x] + w10 * p10[c] + w11 * p10[c + step_x];
}

inline uint8_t to_byte(float v) {
  return static_cast<uint8_t>(std::min(std::max(v + 0.5f, 0.0f), 255.0f));
}

// One RGB pixel as four floats (the fourth unused): GCC/Clang vector extension, so that a
// bilinear sample is a handful of SIMD operations on any target.
typedef float Rgbx __attribute__((vector_size(16)));

// A frame as [H, W] Rgbx, for sampling many times.
struct RgbxImage {
  int width = 0;
  int height = 0;
  std::vector<Rgbx> px;  // [H, W]
};

RgbxImage to_rgbx(const Frame& frame) {
  RgbxImage image;
  image.width = frame.width;
  image.height = frame.height;
  image.px.resize(static_cast<size_t>(frame.width) * frame.height);
  const uint8_t* rgb = frame.rgb.data();
  for (size_t i = 0; i < image.px.size(); ++i)
    image.px[i] = Rgbx{float(rgb[3 * i]), float(rgb[3 * i + 1]), float(rgb[3 * i + 2]), 0.0f};
  return image;
}

// Bilinear sample, edges repeated.
inline Rgbx sample_rgbx(const Rgbx* __restrict px, int w, int h, float x, float y) {
  x = std::min(std::max(x, 0.0f), static_cast<float>(w - 1));
  y = std::min(std::max(y, 0.0f), static_cast<float>(h - 1));
  int x0 = static_cast<int>(x);
  int y0 = static_cast<int>(y);
  int step_x = x0 + 1 < w ? 1 : 0;
  size_t step_y = y0 + 1 < h ? static_cast<size_t>(w) : 0;
  float fx = x - x0;
  float fy = y - y0;
  const Rgbx* p00 = px + static_cast<size_t>(y0) * w + x0;
  const Rgbx* p10 = p00 + step_y;
  Rgbx top = p00[0] + (p00[step_x] - p00[0]) * fx;
  Rgbx bottom = p10[0] + (p10[step_x] - p10[0]) * fx;
  return top + (bottom - top) * fy;
}

Plane to_gray(const Frame& frame) {
  Plane gray(frame.height, frame.width);
  parallel_rows(frame.height, [&](int y) {
    const uint8_t* src = frame.rgb.data() + static_cast<size_t>(y) * frame.width * 3;
    float* dst = gray.row(y);
    for (int x = 0; x < frame.width; ++x)
      dst[x] = 0.299f * src[3 * x] + 0.587f * src[3 * x + 1] + 0.114f * src[3 * x + 2];
  });
  return gray;
}

// Half size (rounded up), 2x2 box average; a lone last row/column averages with itself.
Plane downsample(const Plane& fine) {
  Plane coarse((fine.height + 1) / 2, (fine.width + 1) / 2);
  parallel_rows(coarse.height, [&](int y) {
    const float* r0 = fine.row(2 * y);
    const float* r1 = fine.row(std::min(2 * y + 1, fine.height - 1));
    float* dst = coarse.row(y);
    for (int x = 0; x < coarse.width; ++x) {
      int x0 = 2 * x;
      int x1 = std::min(x0 + 1, fine.width - 1);
      dst[x] = 0.25f * (r0[x0] + r0[x1] + r1[x0] + r1[x1]);
    }
  });
  return coarse;
}

// Central differences (one-sided at the edges), in intensity per pixel.
void gradients(const Plane& p, Plane& gx, Plane& gy) {
  gx = Plane(p.height, p.width);
  gy = Plane(p.height, p.width);
  parallel_rows(p.height, [&](int y) {
    const float* up = p.row(std::max(y - 1, 0));
    const float* mid = p.row(y);
    const float* down = p.row(std::min(y + 1, p.height - 1));
    float dy_scale = (y > 0 && y < p.height - 1) ? 0.5f : 1.0f;
    float* ox = gx.row(y);
    float* oy = gy.row(y);
    for (int x = 0; x < p.width; ++x) {
      int xl = std::max(x - 1, 0), xr = std::min(x + 1, p.width - 1);
      ox[x] = (mid[xr] - mid[xl]) * ((xr - xl) == 2 ? 0.5f : 1.0f);
      oy[x] = (down[x] - up[x]) * dy_scale;
    }
  });
}

// One image's pyramid: gray levels and their gradients (the gradients serve when the image is
// the source of a flow).
struct Pyramid {
  std::vector<Plane> gray, gx, gy;  // level 0 = full size
};

Pyramid build_pyramid(const Frame& frame, int levels, int finest) {
  Pyramid pyr;
  pyr.gray.push_back(to_gray(frame));
  for (int l = 1; l < levels; ++l) pyr.gray.push_back(downsample(pyr.gray.back()));
  pyr.gx.resize(levels);
  pyr.gy.resize(levels);
  for (int l = finest; l < levels; ++l) gradients(pyr.gray[l], pyr.gx[l], pyr.gy[l]);
  return pyr;
}

// Patch origins along one axis: every `stride` pixels, the last flush with the far edge.
std::vector<int> patch_origins(int extent, int patch, int stride) {
  std::vector<int> origins;
  for (int o = 0; o + patch <= extent; o += stride) origins.push_back(o);
  if (origins.empty() || origins.back() != extent - patch) origins.push_back(extent - patch);
  return origins;
}

// For every pixel along one axis, the first and one-past-last patch index covering it.
void covering_patches(const std::vector<int>& origins, int extent, int patch,
                      std::vector<int>& first, std::vector<int>& last) {
  first.assign(extent, 0);
  last.assign(extent, 0);
  int lo = 0;
  int n = static_cast<int>(origins.size());
  for (int p = 0; p < extent; ++p) {
    while (lo < n && origins[lo] + patch <= p) ++lo;
    int hi = lo;
    while (hi < n && origins[hi] <= p) ++hi;
    first[p] = lo;
    last[p] = hi;
  }
}

// Resamples a flow to another size (bilinear) and scales the vectors to the new pixel units.
FlowField resize_flow(const FlowField& flow, int height, int width) {
  FlowField out(height, width);
  float sx = static_cast<float>(flow.width) / width;
  float sy = static_cast<float>(flow.height) / height;
  parallel_rows(height, [&](int y) {
    float fy = (y + 0.5f) * sy - 0.5f;
    for (int x = 0; x < width; ++x) {
      float u, v;
      sample_flow(flow, (x + 0.5f) * sx - 0.5f, fy, u, v);
      size_t i = (static_cast<size_t>(y) * width + x) * 2;
      out.uv[i] = u / sx;
      out.uv[i + 1] = v / sy;
    }
  });
  return out;
}

// Dense Inverse Search at one level: refines `flow` (source -> target, the level's size) in
// place. Per patch: start from the flow at its centre, Gauss-Newton on the mean-normalised
// patch difference with the source's gradients (inverse compositional, so the 2x2 Hessian is
// computed once); then every pixel averages the patches covering it, weighted by
// 1 / max(1, |target(x + u_patch) - source(x)|).
// search_radius > 0 (the coarsest level): each patch first tries every integer offset within
// that radius of its start and keeps the best match, so that motions larger than the
// Gauss-Newton basin (thin structures, textureless surroundings) are still found.
void dis_level(const Plane& src, const Plane& src_gx, const Plane& src_gy, const Plane& dst,
               const FlowOptions& options, int search_radius, FlowField& flow) {
  const int w = src.width, h = src.height;
  const int patch = std::max(1, std::min({options.patch_size, w, h}));
  const int stride = std::max(1, std::min(options.patch_stride, patch));
  const int n = patch * patch;
  std::vector<int> xs = patch_origins(w, patch, stride);
  std::vector<int> ys = patch_origins(h, patch, stride);
  const int px_count = static_cast<int>(xs.size());
  std::vector<float> patch_uv(xs.size() * ys.size() * 2);  // [patch rows, patch cols, 2]

  at::parallel_for(0, static_cast<int64_t>(ys.size()), 4, [&](int64_t begin, int64_t end) {
    std::vector<float> tmpl(n), gxs(n), gys(n), warped(n);
    for (int64_t pj = begin; pj < end; ++pj) {
      const int py = ys[pj];
      for (int pi = 0; pi < px_count; ++pi) {
        const int px = xs[pi];
        float sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
        for (int r = 0; r < patch; ++r) {
          const float* s = src.row(py + r) + px;
          const float* gxr = src_gx.row(py + r) + px;
          const float* gyr = src_gy.row(py + r) + px;
          for (int c = 0; c < patch; ++c) {
            int k = r * patch + c;
            tmpl[k] = s[c];
            gxs[k] = gxr[c];
            gys[k] = gyr[c];
            sx += gxr[c];
            sy += gyr[c];
            sxx += gxr[c] * gxr[c];
            sxy += gxr[c] * gyr[c];
            syy += gyr[c] * gyr[c];
          }
        }
        // Hessian of the mean-normalised difference: gradients minus their patch mean.
        float hxx = sxx - sx * sx / n + 1e-3f;
        float hxy = sxy - sx * sy / n;
        float hyy = syy - sy * sy / n + 1e-3f;
        float det = hxx * hyy - hxy * hxy;
        // Gauss-Newton from (start_u, start_v): the best position seen and its SSD.
        auto refine = [&](float start_u, float start_v, float& best_u, float& best_v) {
          best_u = start_u;
          best_v = start_v;
          float best_ssd = 1e30f;
          if (det <= 1e-2f) return best_ssd;  // flat patch: nothing to fit
          const float ixx = hyy / det, ixy = -hxy / det, iyy = hxx / det;
          float u = start_u, v = start_v;
          for (int it = 0; it < options.patch_iterations; ++it) {
            // Target patch at (px + u, py + v): one fractional offset for the whole patch.
            float fx0 = std::floor(u), fy0 = std::floor(v);
            int ox = px + static_cast<int>(fx0), oy = py + static_cast<int>(fy0);
            float ax = u - fx0, ay = v - fy0;
            if (ox >= 0 && oy >= 0 && ox + patch < w && oy + patch < h) {
              float w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay,
                    w11 = ax * ay;
              for (int r = 0; r < patch; ++r) {
                const float* t0 = dst.row(oy + r) + ox;
                const float* t1 = dst.row(oy + r + 1) + ox;
                float* o = warped.data() + r * patch;
                for (int c = 0; c < patch; ++c)
                  o[c] = w00 * t0[c] + w01 * t0[c + 1] + w10 * t1[c] + w11 * t1[c + 1];
              }
            } else {
              for (int r = 0; r < patch; ++r)
                for (int c = 0; c < patch; ++c)
                  warped[r * patch + c] = sample_clamped(dst, px + c + u, py + r + v);
            }
            float dmean = 0, bx = 0, by = 0, ssd = 0;
            for (int k = 0; k < n; ++k) {
              float d = warped[k] - tmpl[k];
              dmean += d;
              bx += gxs[k] * d;
              by += gys[k] * d;
              ssd += d * d;
            }
            dmean /= n;
            ssd -= n * dmean * dmean;
            bx -= sx * dmean;
            by -= sy * dmean;
            if (ssd < best_ssd) {
              best_ssd = ssd;
              best_u = u;
              best_v = v;
            } else if (it > 0) {
              break;  // diverging: keep the best so far
            }
            float du = ixx * bx + ixy * by;
            float dv = ixy * bx + iyy * by;
            u -= du;
            v -= dv;
            if (du * du + dv * dv < 1e-4f) break;
          }
          // A patch that wandered further than its own size found something else.
          if (std::abs(best_u - start_u) > patch || std::abs(best_v - start_v) > patch) {
            best_u = start_u;
            best_v = start_v;
          }
          return best_ssd;
        };

        float u0, v0;
        sample_flow(flow, px + 0.5f * (patch - 1), py + 0.5f * (patch - 1), u0, v0);
        float best_u, best_v;
        float best_ssd = refine(u0, v0, best_u, best_v);
        if (search_radius > 0) {
          // Mean-normalised SSD at integer offsets (edge pixels repeated); the best offset
          // is refined too, and wins only if it ends better.
          int base_x = static_cast<int>(std::lround(u0));
          int base_y = static_cast<int>(std::lround(v0));
          float best_cost = 1e30f;
          int found_x = base_x, found_y = base_y;
          // Only offsets that keep the patch inside the picture: a match against repeated
          // edge pixels proves nothing.
          for (int oy = std::max(base_y - search_radius, -py);
               oy <= std::min(base_y + search_radius, h - patch - py); ++oy) {
            for (int ox = std::max(base_x - search_radius, -px);
                 ox <= std::min(base_x + search_radius, w - patch - px); ++ox) {
              float sum = 0, sum_sq = 0;
              for (int r = 0; r < patch; ++r) {
                const float* t = dst.row(py + r + oy) + px + ox;
                for (int c = 0; c < patch; ++c) {
                  float d = t[c] - tmpl[r * patch + c];
                  sum += d;
                  sum_sq += d * d;
                }
              }
              float cost = sum_sq - sum * sum / n;
              if (cost < best_cost) {
                best_cost = cost;
                found_x = ox;
                found_y = oy;
              }
            }
          }
          float search_u, search_v;
          float search_ssd =
              refine(static_cast<float>(found_x), static_cast<float>(found_y), search_u, search_v);
          if (search_ssd < 0.8f * best_ssd) {
            best_u = search_u;
            best_v = search_v;
          }
        }
        size_t i = (static_cast<size_t>(pj) * px_count + pi) * 2;
        patch_uv[i] = best_u;
        patch_uv[i + 1] = best_v;
      }
    }
  });

  // The searched level: a 3x3 median over the patch grid (per component) removes the odd
  // patch that locked onto a repeat of the texture.
  if (search_radius > 0 && xs.size() >= 3 && ys.size() >= 3) {
    std::vector<float> filtered(patch_uv.size());
    const int rows = static_cast<int>(ys.size());
    for (int pj = 0; pj < rows; ++pj) {
      for (int pi = 0; pi < px_count; ++pi) {
        for (int comp = 0; comp < 2; ++comp) {
          float window[9];
          int count = 0;
          for (int dj = -1; dj <= 1; ++dj)
            for (int di = -1; di <= 1; ++di) {
              int j = pj + dj, i = pi + di;
              if (j < 0 || i < 0 || j >= rows || i >= px_count) continue;
              window[count++] = patch_uv[(static_cast<size_t>(j) * px_count + i) * 2 + comp];
            }
          std::nth_element(window, window + count / 2, window + count);
          filtered[(static_cast<size_t>(pj) * px_count + pi) * 2 + comp] = window[count / 2];
        }
      }
    }
    patch_uv.swap(filtered);
  }

  // Densification.
  std::vector<int> col_first, col_last, row_first, row_last;
  covering_patches(xs, w, patch, col_first, col_last);
  covering_patches(ys, h, patch, row_first, row_last);
  parallel_rows(h, [&](int y) {
    const float* s = src.row(y);
    for (int x = 0; x < w; ++x) {
      float acc_u = 0, acc_v = 0, acc_w = 0;
      for (int pj = row_first[y]; pj < row_last[y]; ++pj) {
        for (int pi = col_first[x]; pi < col_last[x]; ++pi) {
          size_t i = (static_cast<size_t>(pj) * px_count + pi) * 2;
          float u = patch_uv[i], v = patch_uv[i + 1];
          float d = std::abs(sample_clamped(dst, x + u, y + v) - s[x]);
          float weight = 1.0f / std::max(1.0f, d);
          acc_u += weight * u;
          acc_v += weight * v;
          acc_w += weight;
        }
      }
      size_t i = (static_cast<size_t>(y) * w + x) * 2;
      flow.uv[i] = acc_u / acc_w;
      flow.uv[i + 1] = acc_v / acc_w;
    }
  });
}

int pyramid_levels(int width, int height, const FlowOptions& options) {
  // Coarsest level: about 4 patches across the larger side (as DIS does), at least one
  // patch across the smaller side.
  int coarsest = options.coarsest_level;
  if (coarsest < 0) {
    double across = std::max(width, height) / (4.0 * std::max(1, options.patch_size));
    coarsest = across > 1.0 ? static_cast<int>(std::log2(across) + 0.5) : 0;
  }
  int levels = 1;
  int w = width, h = height;
  while (levels <= coarsest && std::min((w + 1) / 2, (h + 1) / 2) >= options.patch_size) {
    w = (w + 1) / 2;
    h = (h + 1) / 2;
    ++levels;
  }
  return levels;
}

FlowField flow_from_pyramids(const Pyramid& src, const Pyramid& dst, int levels, int finest,
                             const FlowOptions& options) {
  FlowField flow(src.gray[levels - 1].height, src.gray[levels - 1].width);
  for (int l = levels - 1; l >= finest; --l) {
    const Plane& level = src.gray[l];
    if (flow.width != level.width || flow.height != level.height)
      flow = resize_flow(flow, level.height, level.width);
    int search_radius = l == levels - 1 ? options.coarse_search_radius : 0;
    dis_level(level, src.gx[l], src.gy[l], dst.gray[l], options, search_radius, flow);
  }
  return flow;  // at level `finest`
}

// Per source pixel, how hidden it is in the other frame, 0..1, from the round-trip error.
std::vector<float> occlusion_scores(const FlowField& forward, const FlowField& backward,
                                    const FlowOptions& options) {
  std::vector<float> err = consistency_error(forward, backward);
  for (size_t i = 0; i < err.size(); ++i) {
    float mag = std::sqrt(forward.uv[2 * i] * forward.uv[2 * i] +
                          forward.uv[2 * i + 1] * forward.uv[2 * i + 1]);
    float thr = options.occlusion_px + options.occlusion_relative * mag;
    err[i] = std::min(std::max((err[i] - thr) / thr, 0.0f), 1.0f);
  }
  return err;
}

// Splats both flows to time t (in the from -> to direction) with bilinear weights; fully
// consistent pixels weigh 1, hidden ones 1e-3 (they only fill where nothing else lands).
// Holes left are filled by push-pull over a weight pyramid.
FlowField flow_at_time(const FlowField& forward, const FlowField& backward,
                       const std::vector<float>& occ0, const std::vector<float>& occ1, float t) {
  const int w = forward.width, h = forward.height;
  const size_t pixels = static_cast<size_t>(w) * h;
  // Two accumulators [2 sources][H, W, 3] (u, v, weight), one per thread.
  std::vector<float> acc(pixels * 3 * 2, 0.0f);
  at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
    for (int64_t source = begin; source < end; ++source) {
      const FlowField& f = source == 0 ? forward : backward;
      const std::vector<float>& occ = source == 0 ? occ0 : occ1;
      // Frame 0 pixels travel t of their flow; frame 1 pixels (1 - t) of theirs, and their
      // motion in the from -> to direction is -backward.
      float travel = source == 0 ? t : 1.0f - t;
      float sign = source == 0 ? 1.0f : -1.0f;
      float* a = acc.data() + pixels * 3 * source;
      for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
          size_t i = static_cast<size_t>(y) * w + x;
          float u = f.uv[2 * i], v = f.uv[2 * i + 1];
          float tx = x + travel * u, ty = y + travel * v;
          float fx0 = std::floor(tx), fy0 = std::floor(ty);
          int x0 = static_cast<int>(fx0), y0 = static_cast<int>(fy0);
          if (x0 < -1 || y0 < -1 || x0 >= w || y0 >= h) continue;
          float ax = tx - fx0, ay = ty - fy0;
          float conf = 1.0f - occ[i] * 0.999f;
          float weights[4] = {(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay};
          int cx[4] = {x0, x0 + 1, x0, x0 + 1}, cy[4] = {y0, y0, y0 + 1, y0 + 1};
          for (int k = 0; k < 4; ++k) {
            if (cx[k] < 0 || cy[k] < 0 || cx[k] >= w || cy[k] >= h) continue;
            float wk = weights[k] * conf;
            float* cell = a + (static_cast<size_t>(cy[k]) * w + cx[k]) * 3;
            cell[0] += wk * sign * u;
            cell[1] += wk * sign * v;
            cell[2] += wk;
          }
        }
      }
    }
  });

  // Level 0 of the push-pull pyramid: (u, v, weight) with weight capped at 1.
  std::vector<std::vector<float>> levels;  // each [h_l, w_l, 3]
  std::vector<int> lw{w}, lh{h};
  levels.emplace_back(pixels * 3);
  {
    std::vector<float>& l0 = levels[0];
    const float* a0 = acc.data();
    const float* a1 = acc.data() + pixels * 3;
    parallel_rows(h, [&](int y) {
      for (int x = 0; x < w; ++x) {
        size_t i = (static_cast<size_t>(y) * w + x) * 3;
        float wsum = a0[i + 2] + a1[i + 2];
        if (wsum > 1e-6f) {
          l0[i] = (a0[i] + a1[i]) / wsum;
          l0[i + 1] = (a0[i + 1] + a1[i + 1]) / wsum;
        } else {
          l0[i] = l0[i + 1] = 0.0f;
        }
        l0[i + 2] = std::min(wsum, 1.0f);
      }
    });
  }
  // Push: halve until nothing is missing (or one pixel is left).
  while (true) {
    const std::vector<float>& fine = levels.back();
    int fw = lw.back(), fh = lh.back();
    bool complete = true;
    for (size_t i = 2; i < fine.size(); i += 3)
      if (fine[i] < 1.0f) {
        complete = false;
        break;
      }
    if (complete || (fw == 1 && fh == 1)) break;
    int cw = (fw + 1) / 2, ch = (fh + 1) / 2;
    std::vector<float> coarse(static_cast<size_t>(cw) * ch * 3, 0.0f);
    for (int y = 0; y < ch; ++y) {
      for (int x = 0; x < cw; ++x) {
        float su = 0, sv = 0, sw = 0;
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx) {
            int fx = 2 * x + dx, fy = 2 * y + dy;
            if (fx >= fw || fy >= fh) continue;
            const float* c = fine.data() + (static_cast<size_t>(fy) * fw + fx) * 3;
            su += c[2] * c[0];
            sv += c[2] * c[1];
            sw += c[2];
          }
        }
        float* o = coarse.data() + (static_cast<size_t>(y) * cw + x) * 3;
        if (sw > 1e-6f) {
          o[0] = su / sw;
          o[1] = sv / sw;
        }
        o[2] = std::min(sw, 1.0f);
      }
    }
    levels.push_back(std::move(coarse));
    lw.push_back(cw);
    lh.push_back(ch);
  }
  // Pull: every level blends in the coarser one where its own weight is below 1.
  for (int l = static_cast<int>(levels.size()) - 2; l >= 0; --l) {
    std::vector<float>& fine = levels[l];
    const std::vector<float>& coarse = levels[l + 1];
    int fw = lw[l], fh = lh[l], cw = lw[l + 1];
    for (int y = 0; y < fh; ++y) {
      for (int x = 0; x < fw; ++x) {
        float* c = fine.data() + (static_cast<size_t>(y) * fw + x) * 3;
        if (c[2] >= 1.0f) continue;
        const float* p = coarse.data() + (static_cast<size_t>(y / 2) * cw + x / 2) * 3;
        c[0] = c[2] * c[0] + (1 - c[2]) * p[0];
        c[1] = c[2] * c[1] + (1 - c[2]) * p[1];
        c[2] = 1.0f;
      }
    }
  }
  FlowField flow(h, w);
  const std::vector<float>& l0 = levels[0];
  for (size_t i = 0; i < pixels; ++i) {
    flow.uv[2 * i] = l0[3 * i];
    flow.uv[2 * i + 1] = l0[3 * i + 1];
  }
  return flow;
}

// Pair data computed once and shared by every time t, at the flow's working resolution (the
// pyramid level the flow was estimated at; the frames may be larger).
struct PairFlows {
  FlowField forward, backward;    // from -> to, to -> from, in working-resolution pixels
  std::vector<float> occ0, occ1;  // [h, w]: 1 = this frame's pixel is hidden in the other
  RgbxImage image0, image1;       // the frames, for sampling
};

PairFlows make_pair_flows(const Frame& from, const Frame& to, FlowField forward, FlowField backward,
                          const FlowOptions& options) {
  PairFlows pair;
  pair.image0 = to_rgbx(from);
  pair.image1 = to_rgbx(to);
  pair.occ0 = occlusion_scores(forward, backward, options);
  pair.occ1 = occlusion_scores(backward, forward, options);
  pair.forward = std::move(forward);
  pair.backward = std::move(backward);
  return pair;
}

PairFlows estimate_pair(const Frame& from, const Frame& to, const FlowOptions& options) {
  int levels = pyramid_levels(from.width, from.height, options);
  int finest = std::min(std::max(options.finest_level, 0), levels - 1);
  Pyramid pyr0 = build_pyramid(from, levels, finest);
  Pyramid pyr1 = build_pyramid(to, levels, finest);
  return make_pair_flows(from, to, flow_from_pyramids(pyr0, pyr1, levels, finest, options),
                         flow_from_pyramids(pyr1, pyr0, levels, finest, options), options);
}

Frame synthesize(const PairFlows& pair, float t, const FlowOptions& options) {
  const int w = pair.image0.width, h = pair.image0.height;
  // The motion field at time t at working resolution, upsampled per frame row below.
  FlowField flow_t = flow_at_time(pair.forward, pair.backward, pair.occ0, pair.occ1, t);
  const int fw = flow_t.width, fh = flow_t.height;
  const float sx = static_cast<float>(w) / fw, sy = static_cast<float>(h) / fh;
  const float inv_sx = 1.0f / sx, inv_sy = 1.0f / sy;
  // Bilinear upsampling along x: the same two source columns and weight for every row.
  std::vector<int> col0(w), col1(w);
  std::vector<float> col_weight(w);
  for (int x = 0; x < w; ++x) {
    float fx = std::min(std::max((x + 0.5f) * inv_sx - 0.5f, 0.0f), static_cast<float>(fw - 1));
    col0[x] = static_cast<int>(fx);
    col1[x] = std::min(col0[x] + 1, fw - 1);
    col_weight[x] = fx - col0[x];
  }
  Frame out;
  out.width = w;
  out.height = h;
  out.rgb.resize(static_cast<size_t>(w) * h * 3);
  const Rgbx* __restrict px0 = pair.image0.px.data();
  const Rgbx* __restrict px1 = pair.image1.px.data();
  uint8_t* __restrict rgb_out = out.rgb.data();
  const float* __restrict occ0 = pair.occ0.data();
  const float* __restrict occ1 = pair.occ1.data();
  const float* __restrict flow_uv = flow_t.uv.data();
  const bool occlusion_aware = options.occlusion_aware;
  const float fallback_diff = options.fallback_color_diff;
  // Occlusion score of the working-resolution pixel nearest to frame position (x, y), which
  // lies inside the frame.
  auto occ_at = [fw, fh, inv_sx, inv_sy](const float* __restrict occ, float x, float y) {
    int ix = std::min(static_cast<int>((x + 0.5f) * inv_sx), fw - 1);
    int iy = std::min(static_cast<int>((y + 0.5f) * inv_sy), fh - 1);
    return occ[static_cast<size_t>(iy) * fw + ix];
  };
  parallel_rows(h, [=, &col0, &col1, &col_weight](int y) {
    float fy = std::min(std::max((y + 0.5f) * inv_sy - 0.5f, 0.0f), static_cast<float>(fh - 1));
    int row0 = static_cast<int>(fy);
    int row1 = std::min(row0 + 1, fh - 1);
    float ay = fy - row0;
    const float* __restrict r0 = flow_uv + static_cast<size_t>(row0) * fw * 2;
    const float* __restrict r1 = flow_uv + static_cast<size_t>(row1) * fw * 2;
    for (int x = 0; x < w; ++x) {
      size_t i = static_cast<size_t>(y) * w + x;
      int c0i = 2 * col0[x], c1i = 2 * col1[x];
      float ax = col_weight[x];
      float u_top = r0[c0i] + ax * (r0[c1i] - r0[c0i]);
      float u_bottom = r1[c0i] + ax * (r1[c1i] - r1[c0i]);
      float v_top = r0[c0i + 1] + ax * (r0[c1i + 1] - r0[c0i + 1]);
      float v_bottom = r1[c0i + 1] + ax * (r1[c1i + 1] - r1[c0i + 1]);
      float u = (u_top + ay * (u_bottom - u_top)) * sx;
      float v = (v_top + ay * (v_bottom - v_top)) * sy;
      float x0 = x - t * u, y0 = y - t * v;              // where it was in `from`
      float x1 = x + (1 - t) * u, y1 = y + (1 - t) * v;  // where it will be in `to`
      Rgbx c0 = sample_rgbx(px0, w, h, x0, y0);
      Rgbx c1 = sample_rgbx(px1, w, h, x1, y1);
      float w0 = 1 - t, w1 = t;
      float fallback = 0.0f;
      if (occlusion_aware) {
        bool inside0 = x0 > -0.5f && y0 > -0.5f && x0 < w - 0.5f && y0 < h - 0.5f;
        bool inside1 = x1 > -0.5f && y1 > -0.5f && x1 < w - 0.5f && y1 < h - 0.5f;
        float o0 = inside0 ? occ_at(occ0, x0, y0) : 0.0f;
        float o1 = inside1 ? occ_at(occ1, x1, y1) : 0.0f;
        // from's content about to be covered: `to` shows the occluder there, and vice versa.
        w1 *= 1 - o0 * (1 - o1);
        w0 *= 1 - o1 * (1 - o0);
        // A sample from outside the picture is edge colour, not content (entering or leaving
        // at the border): only the other frame knows this pixel.
        if (!inside0) w0 = 0;
        if (!inside1) w1 = 0;
        // Both samples inside, both hidden in the other frame, colours apart: the flow is
        // wrong here, and a fade beats a wrong warp.
        if (fallback_diff > 0 && o0 * o1 > 0) {
          Rgbx d = c0 - c1;
          float diff = (std::abs(d[0]) + std::abs(d[1]) + std::abs(d[2])) * (1.0f / 3.0f);
          fallback = o0 * o1 * std::min(std::max(diff / fallback_diff - 1.0f, 0.0f), 1.0f);
        }
      }
      if (w0 + w1 < 1e-6f) {
        w0 = 1 - t;
        w1 = t;
      }
      Rgbx color = (c0 * w0 + c1 * w1) * (1.0f / (w0 + w1));
      if (fallback > 0) {
        Rgbx fade = px0[i] * (1 - t) + px1[i] * t;
        color += (fade - color) * fallback;
      }
      uint8_t* o = rgb_out + i * 3;
      o[0] = to_byte(color[0]);
      o[1] = to_byte(color[1]);
      o[2] = to_byte(color[2]);
    }
  });
  return out;
}

}  // namespace

FlowField estimate_flow(const Frame& from, const Frame& to, const FlowOptions& options) {
  check_pair(from, to);
  check_options(options);
  int levels = pyramid_levels(from.width, from.height, options);
  int finest = std::min(std::max(options.finest_level, 0), levels - 1);
  Pyramid pyr0 = build_pyramid(from, levels, finest);
  Pyramid pyr1 = build_pyramid(to, levels, finest);
  FlowField flow = flow_from_pyramids(pyr0, pyr1, levels, finest, options);
  if (finest > 0) flow = resize_flow(flow, from.height, from.width);
  return flow;
}

Frame warp_backward(const Frame& image, const FlowField& flow) {
  check_frame(image, "image");
  if (flow.width != image.width || flow.height != image.height ||
      flow.uv.size() != static_cast<size_t>(flow.width) * flow.height * 2)
    throw InputError(str("warp: flow is ", flow.width, "x", flow.height, ", image is ", image.width,
                         "x", image.height));
  Frame out;
  out.width = image.width;
  out.height = image.height;
  out.rgb.resize(image.rgb.size());
  parallel_rows(image.height, [&](int y) {
    for (int x = 0; x < image.width; ++x) {
      float c[3];
      sample_rgb(image.rgb.data(), image.width, image.height, x + flow.dx(y, x), y + flow.dy(y, x),
                 c);
      uint8_t* o = out.rgb.data() + (static_cast<size_t>(y) * image.width + x) * 3;
      for (int k = 0; k < 3; ++k) o[k] = to_byte(c[k]);
    }
  });
  return out;
}

std::vector<float> consistency_error(const FlowField& forward, const FlowField& backward) {
  if (forward.width != backward.width || forward.height != backward.height)
    throw InputError(str("consistency check: flows are ", forward.width, "x", forward.height,
                         " and ", backward.width, "x", backward.height));
  const int w = forward.width, h = forward.height;
  std::vector<float> err(static_cast<size_t>(w) * h);
  parallel_rows(h, [&](int y) {
    for (int x = 0; x < w; ++x) {
      float u = forward.dx(y, x), v = forward.dy(y, x);
      float tx = x + u, ty = y + v;
      size_t i = static_cast<size_t>(y) * w + x;
      if (tx <= -0.5f || ty <= -0.5f || tx >= w - 0.5f || ty >= h - 0.5f) {
        err[i] = 1e6f;
        continue;
      }
      float bu, bv;
      sample_flow(backward, tx, ty, bu, bv);
      err[i] = std::sqrt((u + bu) * (u + bu) + (v + bv) * (v + bv));
    }
  });
  return err;
}

Frame synthesize_frame(const Frame& from, const Frame& to, const FlowField& forward,
                       const FlowField& backward, float t, const FlowOptions& options) {
  check_pair(from, to);
  check_options(options);
  if (forward.width != from.width || forward.height != from.height ||
      backward.width != from.width || backward.height != from.height)
    throw InputError(str("synthesize: flows ", forward.width, "x", forward.height, " and ",
                         backward.width, "x", backward.height, " do not match the frames' ",
                         from.width, "x", from.height));
  if (!(t >= 0.0f && t <= 1.0f)) throw InputError(str("synthesize: t = ", t, " is outside [0, 1]"));
  return synthesize(make_pair_flows(from, to, forward, backward, options), t, options);
}

FrameStack interpolate_flow(const Frame& from, const Frame& to, int count,
                            const FlowOptions& options,
                            const std::function<void(int, int)>& on_frame) {
  check_pair(from, to);
  check_options(options);
  if (count < 0) throw InputError(str("interpolation: frame count ", count, " is negative"));
  FrameStack stack(count, from.height, from.width);
  if (count == 0) return stack;
  PairFlows pair = estimate_pair(from, to, options);
  for (int k = 0; k < count; ++k) {
    float t = static_cast<float>(k + 1) / static_cast<float>(count + 1);
    Frame frame = synthesize(pair, t, options);
    std::copy(frame.rgb.begin(), frame.rgb.end(), stack.frame(k));
    if (on_frame) on_frame(k + 1, count);
  }
  return stack;
}

FrameStack interpolate_crossfade(const Frame& from, const Frame& to, int count) {
  check_pair(from, to);
  if (count < 0) throw InputError(str("cross-fade: frame count ", count, " is negative"));
  FrameStack stack(count, from.height, from.width);
  const size_t bytes = from.rgb.size();
  for (int k = 0; k < count; ++k) {
    float t = static_cast<float>(k + 1) / static_cast<float>(count + 1);
    uint8_t* o = stack.frame(k);
    for (size_t i = 0; i < bytes; ++i) o[i] = to_byte((1 - t) * from.rgb[i] + t * to.rgb[i]);
  }
  return stack;
}

}  // namespace beatfarm::interp
