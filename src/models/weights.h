// safetensors entries as ATen tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "models/safetensors.h"

namespace beatfarm::models {

at::ScalarType scalar_type_of(DType dtype);

// The tensor `name` with the given dtype on the given device. On the CPU with a matching
// dtype it is a zero-copy view of the file mapping (copy-on-write: never written back);
// otherwise a converted copy. Throws Error naming the key when it is missing.
at::Tensor load_tensor(const WeightFiles& weights, const std::string& name, at::ScalarType dtype,
                       at::Device device = at::kCPU);

// Rows [start, start + length) along dim 0 or 1 of a 2-D (or N-D, dim 0) tensor, reading only
// those bytes (tensor-parallel shards).
at::Tensor load_slice(const WeightFiles& weights, const std::string& name, int64_t dim,
                      int64_t start, int64_t length, at::ScalarType dtype,
                      at::Device device = at::kCPU);

// Checks a loaded tensor's shape; Error naming the key and both shapes otherwise.
void expect_shape(const at::Tensor& tensor, const std::string& name,
                  const std::vector<int64_t>& shape);

}  // namespace beatfarm::models

namespace beatfarm::models {

// Writes tensors (CPU, contiguous copies are made as needed) as a safetensors file, in name
// order, header padded to 8 bytes; atomically (path.tmp + rename).
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace beatfarm::models
