// 2D TMA tensor maps: a descriptor of a row-major matrix in global memory and the box (tile) a TMA load copies.
//
//   TensorMap make_tensor_map_2d(base, dtype, width, height, row_stride_bytes, box_width, box_height)  [host]
//
// width/box_width count elements along a row (the innermost, contiguous dimension, TMA coordinate x);
// height/box_height count rows (coordinate y). A box lands in shared memory packed row-major:
// box_height rows of box_width * dtype_bytes(dtype) bytes. Elements outside [0,width) x [0,height) read as zero.
// The box's column x must start on a 16-byte boundary: x * element size a multiple of 16 (x may be negative or past
// the right edge, y anything); a misaligned x is an illegal instruction on the GPU and a Misaligned report in the
// emulator. Nothing here can check it: x is a device-side value given to tma_load_2d.
// Create maps once on the host and pass them inside the kernel's Params (`const CF_GRID_CONSTANT Params p`,
// then tma_load_2d(dst, p.map, x, y, bar)); never copy a TensorMap into shared or global memory yourself.
// CUDA: encoded by cuTensorMapEncodeTiled, reached through cudaGetDriverEntryPointByVersion (no libcuda link),
// no swizzle, no interleave, zero fill. Emulator: a plain struct read by tma_load_2d.
// Requirements (checked in both builds, cf::InputError): base 16-byte aligned; row_stride_bytes a multiple of 16,
// >= width * element size and < 2^40; box_width * element size a multiple of 16; 1 <= box dims <= 256;
// 1 <= width, height <= 2^32.
#pragma once
#include <cstdint>
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/types.hpp"

#if defined(CF_RUNTIME_CUDA)
#include <cuda.h>
#include <cuda_runtime_api.h>

#include "clusterfusion/cuda/check.hpp"
#endif

namespace cf::dev::inline CF_BUILD_NAMESPACE {

#if defined(CF_RUNTIME_CUDA)
struct TensorMap {  // 128-byte aligned, like CUtensorMap
  CUtensorMap map;
};
#else
struct TensorMap {
  static constexpr uint32_t kMagic = 0x7e45a9b1u;
  uint32_t magic = 0;  // set by make_tensor_map_2d; the emulator rejects maps not made by it
  DType dtype = DType::F16;
  const void* base = nullptr;
  uint64_t width = 0, height = 0, row_stride_bytes = 0;
  uint32_t box_width = 0, box_height = 0;
  uint32_t box_bytes() const { return box_width * box_height * dtype_bytes(dtype); }
};
#endif

namespace detail {

inline void validate_tensor_map_2d(const void* base, DType dtype, uint64_t width, uint64_t height,
                                   uint64_t row_stride_bytes, uint32_t box_width, uint32_t box_height) {
  const uint64_t elem = dtype_bytes(dtype);
  auto fail = [&](const std::string& what) {
    throw InputError("make_tensor_map_2d(width " + std::to_string(width) + ", height " + std::to_string(height) +
                     ", row_stride " + std::to_string(row_stride_bytes) + " B, box " + std::to_string(box_width) +
                     "x" + std::to_string(box_height) + "): " + what);
  };
  if (elem == 0) fail("element type must be F32, F16 or BF16 (a block-quantised type has no element box)");
  if (base == nullptr) fail("base pointer is null");
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) fail("base address must be 16-byte aligned");
  if (width < 1 || height < 1 || width > (uint64_t(1) << 32) || height > (uint64_t(1) << 32))
    fail("width and height must be in [1, 2^32]");
  if (row_stride_bytes % 16 != 0) fail("row stride must be a multiple of 16 bytes");
  if (row_stride_bytes < width * elem) fail("row stride is smaller than a row (width * element size)");
  if (row_stride_bytes >= (uint64_t(1) << 40)) fail("row stride must be < 2^40 bytes");
  if (box_width < 1 || box_height < 1 || box_width > kMaxTmaBoxDim || box_height > kMaxTmaBoxDim)
    fail("box dimensions must be in [1, 256]");
  if ((box_width * elem) % 16 != 0) fail("box row (box_width * element size) must be a multiple of 16 bytes");
}

#if defined(CF_RUNTIME_CUDA)
inline CUtensorMapDataType cu_tensor_map_dtype(DType t) {
  switch (t) {
    case DType::F16: return CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    case DType::BF16: return CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    default: return CU_TENSOR_MAP_DATA_TYPE_FLOAT32;  // F32 (validate_tensor_map_2d rejects the block formats)
  }
}

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver function, looked up once through the runtime (so nothing links libcuda).
inline EncodeTiledFn encode_tiled_fn() {
  static const EncodeTiledFn fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status{};
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &status);
    if (err != cudaSuccess)
      cuda::throw_cuda_error(err, "make_tensor_map_2d: cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled)");
    if (status != cudaDriverEntryPointSuccess || ptr == nullptr)
      throw Error("make_tensor_map_2d: the driver has no cuTensorMapEncodeTiled (a CUDA 12.0 driver or newer is "
                  "needed)");
    return reinterpret_cast<EncodeTiledFn>(ptr);
  }();
  return fn;
}
#endif

}  // namespace detail

inline TensorMap make_tensor_map_2d(const void* base, DType dtype, uint64_t width, uint64_t height,
                                    uint64_t row_stride_bytes, uint32_t box_width, uint32_t box_height) {
  detail::validate_tensor_map_2d(base, dtype, width, height, row_stride_bytes, box_width, box_height);
  TensorMap out{};
#if defined(CF_RUNTIME_CUDA)
  const cuuint64_t dims[2] = {width, height};
  const cuuint64_t strides[1] = {row_stride_bytes};
  const cuuint32_t box[2] = {box_width, box_height};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult res = detail::encode_tiled_fn()(
      &out.map, detail::cu_tensor_map_dtype(dtype), 2, const_cast<void*>(base), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (res != CUDA_SUCCESS)
    throw Error("make_tensor_map_2d: cuTensorMapEncodeTiled failed with CUresult " + std::to_string(int(res)));
#else
  out.magic = TensorMap::kMagic;
  out.dtype = dtype;
  out.base = base;
  out.width = width;
  out.height = height;
  out.row_stride_bytes = row_stride_bytes;
  out.box_width = box_width;
  out.box_height = box_height;
#endif
  return out;
}

// Bytes one tma_load_2d of this box delivers (what the mbarrier's expect-tx must count, out-of-bounds part included).
constexpr uint32_t tma_box_bytes(DType dtype, uint32_t box_width, uint32_t box_height) {
  return box_width * box_height * dtype_bytes(dtype);
}

}  // namespace cf::dev::inline CF_BUILD_NAMESPACE
