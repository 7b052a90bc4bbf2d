#include "models/layers.h"

namespace beatfarm::models {

at::Tensor load(const WeightFiles& weights, const std::string& name, const LoadOptions& options) {
  return load_tensor(weights, name, options.dtype, options.device);
}

at::Tensor load_f32(const WeightFiles& weights, const std::string& name, const LoadOptions& options) {
  return load_tensor(weights, name, at::kFloat, options.device);
}

Linear load_linear(const WeightFiles& weights, const std::string& prefix, const LoadOptions& options,
                   bool bias_required) {
  Linear linear;
  linear.weight = load(weights, prefix + ".weight", options);
  if (bias_required || weights.has(prefix + ".bias")) linear.bias = load(weights, prefix + ".bias", options);
  return linear;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean({-1}, /*keepdim=*/true) + eps);
  if (weight.defined()) normed = normed * weight.to(at::kFloat);
  return normed.to(x.scalar_type());
}

at::Tensor layer_norm_f32(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                          double eps) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor w = weight.defined() ? weight.to(at::kFloat) : at::Tensor();
  at::Tensor b = bias.defined() ? bias.to(at::kFloat) : at::Tensor();
  return at::layer_norm(x32, {x.size(-1)}, w, b, eps).to(x.scalar_type());
}

at::Tensor gelu_tanh(const at::Tensor& x) { return at::gelu(x, "tanh"); }

}  // namespace beatfarm::models
