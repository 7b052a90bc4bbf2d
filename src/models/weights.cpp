#include "models/weights.h"

#include <ATen/ATen.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace beatfarm::models {

at::ScalarType scalar_type_of(DType dtype) {
  switch (dtype) {
    case DType::F64: return at::kDouble;
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I64: return at::kLong;
    case DType::I32: return at::kInt;
    case DType::I16: return at::kShort;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::Bool: return at::kBool;
  }
  throw Error("unknown dtype");
}

namespace {

// A view of bytes in the mapping, kept alive by the tensor's deleter.
at::Tensor view_of(const SafetensorsFile& file, const TensorInfo& info, const uint8_t* bytes,
                   const std::vector<int64_t>& shape) {
  auto mapping = file.mapping();
  auto keep_alive = [mapping](void*) {};
  at::ScalarType type = scalar_type_of(info.dtype);
  if (reinterpret_cast<uintptr_t>(bytes) % dtype_size(info.dtype) != 0) {
    // Unaligned data cannot be viewed in place: copy it.
    at::Tensor copy = at::empty(shape, at::TensorOptions().dtype(type));
    std::memcpy(copy.data_ptr(), bytes, size_t(copy.numel()) * dtype_size(info.dtype));
    return copy;
  }
  return at::from_blob(const_cast<uint8_t*>(bytes), shape, keep_alive,
                       at::TensorOptions().dtype(type));
}

at::Tensor convert(at::Tensor tensor, at::ScalarType dtype, at::Device device) {
  if (tensor.scalar_type() != dtype) tensor = tensor.to(dtype);
  if (tensor.device() != device) tensor = tensor.to(device);
  return tensor;
}

}  // namespace

at::Tensor load_tensor(const WeightFiles& weights, const std::string& name, at::ScalarType dtype,
                       at::Device device) {
  const SafetensorsFile& file = weights.file_of(name);
  const TensorInfo& info = file.info(name);
  return convert(view_of(file, info, file.data(info), info.shape), dtype, device);
}

at::Tensor load_slice(const WeightFiles& weights, const std::string& name, int64_t dim,
                      int64_t start, int64_t length, at::ScalarType dtype, at::Device device) {
  const SafetensorsFile& file = weights.file_of(name);
  const TensorInfo& info = file.info(name);
  if (info.shape.empty() || dim < 0 || dim >= int64_t(info.shape.size()) || dim > 1 ||
      (dim == 1 && info.shape.size() != 2))
    throw Error(str("cannot slice '", name, "' along dim ", dim));
  if (start < 0 || length < 0 || start + length > info.shape[dim])
    throw Error(str("slice [", start, ", ", start + length, ") of '", name, "' is outside its dim ", dim,
                    " of ", info.shape[dim]));
  std::vector<int64_t> shape = info.shape;
  shape[dim] = length;
  if (dim == 0) {
    // Contiguous rows: a view of just those bytes.
    int64_t row = 1;
    for (size_t d = 1; d < info.shape.size(); ++d) row *= info.shape[d];
    const uint8_t* bytes = file.data(info) + size_t(start * row) * dtype_size(info.dtype);
    return convert(view_of(file, info, bytes, shape), dtype, device);
  }
  // Columns: each row's part read with pread. Reading them through the mapping would fault in
  // every page of the tensor (a row's part is usually smaller than a page), making the whole
  // tensor resident in each rank; pread goes through the page cache only.
  const size_t element = dtype_size(info.dtype);
  const int64_t rows = info.shape[0], columns = info.shape[1];
  at::Tensor part = at::empty(shape, at::TensorOptions().dtype(scalar_type_of(info.dtype)));
  const uint64_t tensor_offset = uint64_t(file.data(info) - file.mapping()->data());
  const int fd = ::open(file.path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(str("cannot open '", file.path(), "' to read a slice of '", name, "'"));
  uint8_t* out = static_cast<uint8_t*>(part.data_ptr());
  const size_t row_bytes = size_t(length) * element;
  for (int64_t r = 0; r < rows; ++r) {
    uint64_t offset = tensor_offset + (uint64_t(r) * uint64_t(columns) + uint64_t(start)) * element;
    size_t done = 0;
    while (done < row_bytes) {
      const ssize_t got = ::pread(fd, out + done, row_bytes - done, off_t(offset + done));
      if (got <= 0) {
        ::close(fd);
        throw Error(str("cannot read a slice of '", name, "' from '", file.path(), "'"));
      }
      done += size_t(got);
    }
    out += row_bytes;
  }
  ::close(fd);
  return convert(part, dtype, device);
}

void expect_shape(const at::Tensor& tensor, const std::string& name,
                  const std::vector<int64_t>& shape) {
  if (tensor.sizes().vec() != shape) {
    std::string want, have;
    for (int64_t d : shape) want += (want.empty() ? "" : ",") + std::to_string(d);
    for (int64_t d : tensor.sizes()) have += (have.empty() ? "" : ",") + std::to_string(d);
    throw Error(str("weight '", name, "' has shape [", have, "], expected [", want, "]"));
  }
}

namespace {
DType dtype_of(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return DType::F64;
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kLong: return DType::I64;
    case at::kInt: return DType::I32;
    case at::kShort: return DType::I16;
    case at::kChar: return DType::I8;
    case at::kByte: return DType::U8;
    case at::kBool: return DType::Bool;
    default: throw Error(str("safetensors cannot store dtype ", at::toString(type)));
  }
}
}  // namespace

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, at::Tensor>> sorted;
  for (const auto& [name, tensor] : tensors) sorted.emplace_back(name, tensor.cpu().contiguous());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : sorted) {
    uint64_t bytes = uint64_t(tensor.numel()) * tensor.element_size();
    header[name] = {{"dtype", dtype_name(dtype_of(tensor.scalar_type()))},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(str("cannot write '", temporary, "'"));
    uint64_t length = text.size();
    for (int i = 0; i < 8; ++i) out.put(char((length >> (8 * i)) & 0xFF));
    out.write(text.data(), std::streamsize(text.size()));
    for (const auto& [name, tensor] : sorted)
      out.write(static_cast<const char*>(tensor.data_ptr()),
                std::streamsize(uint64_t(tensor.numel()) * tensor.element_size()));
    if (!out) throw Error(str("cannot write '", temporary, "' (disk full?)"));
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    throw Error(str("cannot rename '", temporary, "' to '", path, "'"));
  }
}

}  // namespace beatfarm::models
