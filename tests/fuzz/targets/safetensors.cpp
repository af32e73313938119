// Safetensors bytes -> SafetensorsFile -> tensor table, canonical names, TensorRefs, dequantised rows.
#include <algorithm>
#include <optional>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/formats/safetensors.hpp"
#include "fuzz_common.hpp"

namespace cf::fuzz {

void safetensors(const uint8_t* data, size_t size) {
  std::optional<SafetensorsFile> file;
  try {
    file.emplace(SafetensorsFile::from_memory("fuzz.safetensors", data, size));
  } catch (const InputError&) {
    return;
  }
  const SafetensorsFile& f = *file;
  for (const auto& [k, v] : f.metadata()) (void)f.find(k);
  std::vector<float> rows;
  for (const auto& t : f.tensors()) {
    CF_FUZZ_ASSERT(f.find(t.name) == &t, "find() does not return the tensor '" + show(t.name) + "'");
    CF_FUZZ_ASSERT(t.data >= data + f.data_offset() && t.end - t.begin <= uint64_t(data + size - t.data),
                   "tensor '" + show(t.name) + "' extends past the data section");
    CF_FUZZ_ASSERT(t.numel() >= 0 && uint64_t(t.numel()) * uint64_t(t.dtype_bytes) == t.end - t.begin,
                   "size of '" + show(t.name) + "' does not match its shape");
    const auto canonical = canonical_tensor_name(t.name);
    TensorRef ref;
    try {
      ref = f.tensor_ref(t, canonical.value_or(t.name));
    } catch (const InputError&) {
      continue;
    }
    CF_FUZZ_ASSERT(ref.nbytes == size_t(ref.numel()) * size_t(dtype_block_bytes(ref.dtype)),
                   "TensorRef size mismatch for '" + show(t.name) + "'");
    if (ref.cols() == 0 || ref.rows() == 0) continue;
    const int64_t n_rows = std::min<int64_t>(ref.rows(), 3);
    if (n_rows * ref.cols() <= (int64_t(1) << 16)) {
      rows.resize(size_t(n_rows * ref.cols()));
      dequantize_rows(ref, 0, n_rows, rows.data());
      dequantize_rows(ref, ref.rows() - n_rows, n_rows, rows.data());
    }
    (void)find_non_finite_row(ref);
  }
}

}  // namespace cf::fuzz
