// The one place that knows which libtorch we build against: Debian's 1.13 (CPU) here, the
// 2.x inside PyTorch on GPU machines.
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

namespace beatfarm::models {

// softmax(q k^T / sqrt(d) + mask) v over [B, H, L, D] tensors; mask is additive (or undefined).
// torch 2.x has a fused kernel; 1.13 only exposes a private one, so it is spelled out there.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& mask = {}) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, mask.defined() ? c10::optional<at::Tensor>(mask)
                                                                   : c10::nullopt);
#else
  const double scale = 1.0 / std::sqrt(double(q.size(-1)));
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;  // [B, H, Lq, Lk]
  if (mask.defined()) scores = scores + mask;
  return at::matmul(at::softmax(scores, -1), v);  // [B, H, Lq, D]
#endif
}

}  // namespace beatfarm::models
