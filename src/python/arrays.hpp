// Arrays handed in from Python (numpy, torch, cupy, anything with __dlpack__ or the buffer protocol), seen through
// nanobind's ndarray, with the checks every binding needs: one-line messages naming the argument, TypeError for
// "not an array" and wrong element types, ValueError for shapes, strides, devices and values.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace cf::py {

namespace nb = nanobind;

enum class Elem { F16, BF16, F32, I32, I64, U64, Other };

inline const char* elem_name(Elem e) {
  switch (e) {
    case Elem::F16: return "float16";
    case Elem::BF16: return "bfloat16";
    case Elem::F32: return "float32";
    case Elem::I32: return "int32";
    case Elem::I64: return "int64";
    case Elem::U64: return "uint64";
    case Elem::Other: break;
  }
  return "an unsupported type";
}

inline Elem elem_of(nb::dlpack::dtype t) {
  using C = nb::dlpack::dtype_code;
  if (t.lanes != 1) return Elem::Other;
  if (t.code == uint8_t(C::Float) && t.bits == 16) return Elem::F16;
  if (t.code == uint8_t(C::Float) && t.bits == 32) return Elem::F32;
  if (t.code == uint8_t(C::Bfloat) && t.bits == 16) return Elem::BF16;
  if (t.code == uint8_t(C::Int) && t.bits == 32) return Elem::I32;
  if (t.code == uint8_t(C::Int) && t.bits == 64) return Elem::I64;
  if (t.code == uint8_t(C::UInt) && t.bits == 64) return Elem::U64;
  return Elem::Other;
}

inline std::string dims_text(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// "float64", "uint8", "complex64", ... for messages.
inline std::string dtype_text(nb::dlpack::dtype t) {
  using C = nb::dlpack::dtype_code;
  const char* kind = t.code == uint8_t(C::Int)       ? "int"
                     : t.code == uint8_t(C::UInt)    ? "uint"
                     : t.code == uint8_t(C::Float)   ? "float"
                     : t.code == uint8_t(C::Bfloat)  ? "bfloat"
                     : t.code == uint8_t(C::Complex) ? "complex"
                     : t.code == uint8_t(C::Bool)    ? "bool"
                                                     : "type-code-";
  std::string s = kind + std::to_string(t.bits);
  if (t.lanes != 1) s += "x" + std::to_string(t.lanes);
  return s;
}

// One array argument. Holds the ndarray (which keeps the Python owner alive) and what the checks need.
struct Array {
  nb::ndarray<nb::ro> nd;
  std::string name;
  Elem elem = Elem::Other;
  bool cuda = false;
  int device_id = 0;

  int ndim() const { return int(nd.ndim()); }
  int64_t dim(int i) const { return int64_t(nd.shape(size_t(i))); }
  std::vector<int64_t> dims() const {
    std::vector<int64_t> d(static_cast<size_t>(ndim()));
    for (int i = 0; i < ndim(); ++i) d[size_t(i)] = dim(i);
    return d;
  }
  int64_t numel() const { return int64_t(nd.size()); }
  void* data() const { return const_cast<void*>(nd.data()); }
  size_t bytes() const { return size_t(nd.nbytes()); }

  [[noreturn]] void fail_value(const std::string& what) const { throw nb::value_error((name + ": " + what).c_str()); }
  [[noreturn]] void fail_type(const std::string& what) const { throw nb::type_error((name + ": " + what).c_str()); }

  void expect_elem(std::initializer_list<Elem> allowed) const {
    for (Elem e : allowed)
      if (e == elem) return;
    std::string list;
    for (Elem e : allowed) list += (list.empty() ? "" : " or ") + std::string(elem_name(e));
    fail_type("dtype is " + dtype_text(nd.dtype()) + ", expected " + list);
  }
  void expect_ndim(int n) const {
    if (ndim() != n)
      fail_value("has shape " + dims_text(dims()) + " (" + std::to_string(ndim()) + "-D), expected a " +
                 std::to_string(n) + "-D array");
  }
  // Shape check; -1 in `want` accepts any extent.
  void expect_shape(const std::vector<int64_t>& want, const std::string& meaning) const {
    bool ok = ndim() == int(want.size());
    for (size_t i = 0; ok && i < want.size(); ++i) ok = want[i] < 0 || want[i] == dim(int(i));
    if (!ok) fail_value("has shape " + dims_text(dims()) + ", expected " + dims_text(want) + " " + meaning);
  }
};

// C-contiguous (row-major, dense) check; extents of 1 may have any stride.
inline bool is_c_contiguous(const Array& a) {
  int64_t expected = 1;
  for (int i = a.ndim() - 1; i >= 0; --i) {
    if (a.dim(i) != 1 && a.nd.stride(size_t(i)) != expected) return false;
    expected *= a.dim(i);
  }
  return true;
}

// Converts a Python object into an Array. writable: the binding writes into it (a read-only array is refused).
inline Array to_array(nb::handle h, const char* name, bool writable) {
  Array a;
  a.name = name;
  if (h.is_none()) throw nb::type_error((std::string(name) + ": got None, expected an array").c_str());
  bool converted = false;
  if (writable) {
    nb::ndarray<> w;
    converted = nb::try_cast(h, w, /*convert=*/false);
    if (converted) {
      a.nd = nb::ndarray<nb::ro>(w);
    } else if (nb::try_cast(h, a.nd, false)) {
      throw nb::value_error((std::string(name) + ": the array is read-only, but it is an output").c_str());
    }
  } else {
    converted = nb::try_cast(h, a.nd, false);
  }
  if (!converted) {
    std::string type = nb::inst_name(h).c_str();
    std::string hint;
    if (nb::hasattr(h, "requires_grad")) hint = " (a torch tensor that requires grad: pass tensor.detach())";
    throw nb::type_error((std::string(name) + ": expected an array (numpy, torch, cupy or any object with "
                          "__dlpack__), got " + type + hint).c_str());
  }
  a.elem = elem_of(a.nd.dtype());
  const int dev = a.nd.device_type();
  if (dev == nb::device::cuda::value || dev == nb::device::cuda_managed::value) {
    a.cuda = true;
  } else if (dev != nb::device::cpu::value && dev != nb::device::cuda_host::value) {
    throw nb::value_error((std::string(name) + ": arrays on DLPack device type " + std::to_string(dev) +
                           " are not supported (CPU or CUDA)").c_str());
  }
  a.device_id = a.nd.device_id();
  // An empty array has no layout to speak of: its shape check (the caller's) says what is wrong with it.
  if (a.numel() > 0 && !is_c_contiguous(a))
    throw nb::value_error((std::string(name) + ": the array is not contiguous (shape " + dims_text(a.dims()) +
                           "); pass a C-contiguous array (numpy.ascontiguousarray / tensor.contiguous())").c_str());
  return a;
}

inline std::optional<Array> to_optional_array(nb::handle h, const char* name, bool writable) {
  if (h.is_none()) return std::nullopt;
  return to_array(h, name, writable);
}

// All arrays on one device: every one on the CPU (cuda == false) or every one on the same CUDA device.
inline void expect_same_device(const std::vector<const Array*>& arrays, bool cuda) {
  const Array* first = nullptr;
  for (const Array* a : arrays) {
    if (!a) continue;
    if (a->cuda != cuda)
      a->fail_value(std::string("is on the ") + (a->cuda ? "GPU" : "CPU") + " but " +
                    (first ? first->name : std::string("the other arguments")) + " is on the " +
                    (cuda ? "GPU" : "CPU") + ": every array of one call must be on the same device");
    if (first && cuda && a->device_id != first->device_id)
      a->fail_value("is on CUDA device " + std::to_string(a->device_id) + " but " + first->name +
                    " is on CUDA device " + std::to_string(first->device_id));
    if (!first) first = a;
  }
}

// True when the bytes of a and b overlap (nothing overlaps an empty array).
inline bool overlaps(const Array& a, const Array& b) {
  if (a.bytes() == 0 || b.bytes() == 0 || a.cuda != b.cuda) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.data()), b0 = reinterpret_cast<uintptr_t>(b.data());
  return a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
}

// The arrays a call writes must not share memory with anything else it reads or writes (a result computed into
// a weight or into the KV cache it reads from is silently wrong), except where the API allows an output to be
// exactly one input (same address and size: an in-place update). Checks every pair; ValueError naming both.
struct Alias {
  const Array* written;
  std::vector<const Array*> may_be;  // inputs this output may be, exactly
};
inline void expect_no_overlap(const std::vector<Alias>& outputs, const std::vector<const Array*>& inputs) {
  auto same = [](const Array& a, const Array& b) { return a.data() == b.data() && a.bytes() == b.bytes(); };
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Array& w = *outputs[i].written;
    for (size_t j = i + 1; j < outputs.size(); ++j)
      if (overlaps(w, *outputs[j].written))
        w.fail_value("shares memory with " + outputs[j].written->name + " (outputs must be separate arrays)");
    for (const Array* r : inputs) {
      if (!r || !overlaps(w, *r)) continue;
      const bool allowed = std::find(outputs[i].may_be.begin(), outputs[i].may_be.end(), r) != outputs[i].may_be.end();
      if (allowed && same(w, *r)) continue;
      w.fail_value("shares memory with " + r->name +
                   (allowed ? " without being exactly that array (an in-place update passes the same array)"
                            : " (an output must not overlap what the call reads)"));
    }
  }
}

// Same element type as `ref`.
inline void expect_same_elem(const Array& a, const Array& ref) {
  if (a.elem != ref.elem)
    a.fail_type("dtype is " + dtype_text(a.nd.dtype()) + " but " + ref.name + " is " + dtype_text(ref.nd.dtype()) +
                " (activations, weights and the KV cache share one dtype)");
}

}  // namespace cf::py
