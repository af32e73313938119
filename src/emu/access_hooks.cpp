// Where plain loads and stores of kernel code reach the access checks (shadow.hpp). Targets that compile kernels for
// the emulator are built with compiler instrumentation (cmake/CFEmuChecks.cmake, cf_emu_checked_target()):
//   - normal builds: -fsanitize=thread with no ThreadSanitizer runtime linked: the instrumented code calls the
//     __tsan_* functions below (every load/store with its size, plus a few bookkeeping calls); the atomics entry
//     points perform the atomic operation themselves (host code in those files may use std::atomic, shared_ptr)
//   - AddressSanitizer builds (CF_SANITIZE; ASan and TSan do not mix): AddressSanitizer in call mode, every check a
//     call to __asan_load4 etc., which the link wraps (-Wl,--wrap) to come here first and then go on to ASan's check.
// Both pass the access and the caller's address (the kernel's code address, symbolised in reports).
#include <cstddef>
#include <cstdint>

#include "shadow.hpp"

#define CF_EMU_HOOK extern "C" __attribute__((visibility("default"), used))

namespace {
using cf::dev::emu::on_access;
}  // namespace

#define CF_EMU_PC __builtin_return_address(0)

#if defined(CF_SANITIZE)
// ---- AddressSanitizer call mode, wrapped at link time ---------------------------------------------------------------
#define CF_EMU_ASAN_SIZED(n)                                              \
  extern "C" void __real___asan_load##n(uintptr_t);                     \
  extern "C" void __real___asan_store##n(uintptr_t);                    \
  CF_EMU_HOOK void __wrap___asan_load##n(uintptr_t a) {                 \
    on_access(reinterpret_cast<const void*>(a), n, false, CF_EMU_PC);   \
    __real___asan_load##n(a);                                           \
  }                                                                     \
  CF_EMU_HOOK void __wrap___asan_store##n(uintptr_t a) {                \
    on_access(reinterpret_cast<const void*>(a), n, true, CF_EMU_PC);    \
    __real___asan_store##n(a);                                          \
  }
CF_EMU_ASAN_SIZED(1)
CF_EMU_ASAN_SIZED(2)
CF_EMU_ASAN_SIZED(4)
CF_EMU_ASAN_SIZED(8)
CF_EMU_ASAN_SIZED(16)
extern "C" void __real___asan_loadN(uintptr_t, size_t);
extern "C" void __real___asan_storeN(uintptr_t, size_t);
CF_EMU_HOOK void __wrap___asan_loadN(uintptr_t a, size_t n) {
  on_access(reinterpret_cast<const void*>(a), n, false, CF_EMU_PC);
  __real___asan_loadN(a, n);
}
CF_EMU_HOOK void __wrap___asan_storeN(uintptr_t a, size_t n) {
  on_access(reinterpret_cast<const void*>(a), n, true, CF_EMU_PC);
  __real___asan_storeN(a, n);
}

#else
// ---- ThreadSanitizer instrumentation, no TSan runtime ---------------------------------------------------------------
#define CF_EMU_TSAN_SIZED(n)                                                                                    \
  CF_EMU_HOOK void __tsan_read##n(void* p) { on_access(p, n, false, CF_EMU_PC); }                              \
  CF_EMU_HOOK void __tsan_write##n(void* p) { on_access(p, n, true, CF_EMU_PC); }                              \
  CF_EMU_HOOK void __tsan_unaligned_read##n(void* p) { on_access(p, n, false, CF_EMU_PC); }                    \
  CF_EMU_HOOK void __tsan_unaligned_write##n(void* p) { on_access(p, n, true, CF_EMU_PC); }                    \
  CF_EMU_HOOK void __tsan_volatile_read##n(void* p) { on_access(p, n, false, CF_EMU_PC); }                     \
  CF_EMU_HOOK void __tsan_volatile_write##n(void* p) { on_access(p, n, true, CF_EMU_PC); }                     \
  CF_EMU_HOOK void __tsan_unaligned_volatile_read##n(void* p) { on_access(p, n, false, CF_EMU_PC); }           \
  CF_EMU_HOOK void __tsan_unaligned_volatile_write##n(void* p) { on_access(p, n, true, CF_EMU_PC); }           \
  CF_EMU_HOOK void __tsan_read##n##_pc(void* p, void* pc) { on_access(p, n, false, pc); }                      \
  CF_EMU_HOOK void __tsan_write##n##_pc(void* p, void* pc) { on_access(p, n, true, pc); }
CF_EMU_TSAN_SIZED(1)
CF_EMU_TSAN_SIZED(2)
CF_EMU_TSAN_SIZED(4)
CF_EMU_TSAN_SIZED(8)
CF_EMU_TSAN_SIZED(16)
CF_EMU_HOOK void __tsan_read_range(void* p, size_t n) { on_access(p, n, false, CF_EMU_PC); }
CF_EMU_HOOK void __tsan_write_range(void* p, size_t n) { on_access(p, n, true, CF_EMU_PC); }
CF_EMU_HOOK void __tsan_read_range_pc(void* p, size_t n, void* pc) { on_access(p, n, false, pc); }
CF_EMU_HOOK void __tsan_write_range_pc(void* p, size_t n, void* pc) { on_access(p, n, true, pc); }

// bookkeeping the instrumentation emits that the checks do not need
CF_EMU_HOOK void __tsan_init() {}
CF_EMU_HOOK void __tsan_func_entry(void*) {}
CF_EMU_HOOK void __tsan_func_exit() {}
CF_EMU_HOOK void __tsan_ignore_thread_begin() {}
CF_EMU_HOOK void __tsan_ignore_thread_end() {}
CF_EMU_HOOK void __tsan_vptr_update(void** vptr, void* /*value*/) { on_access(vptr, sizeof(void*), true, CF_EMU_PC); }
CF_EMU_HOOK void __tsan_vptr_read(void** vptr) { on_access(vptr, sizeof(void*), false, CF_EMU_PC); }

// memory intrinsics (clang instruments memcpy/memset/memmove as calls to these)
extern "C" void* memcpy(void*, const void*, size_t) noexcept;
extern "C" void* memmove(void*, const void*, size_t) noexcept;
extern "C" void* memset(void*, int, size_t) noexcept;
CF_EMU_HOOK void* __tsan_memcpy(void* d, const void* s, size_t n) {
  on_access(s, n, false, CF_EMU_PC);
  on_access(d, n, true, CF_EMU_PC);
  return memcpy(d, s, n);
}
CF_EMU_HOOK void* __tsan_memmove(void* d, const void* s, size_t n) {
  on_access(s, n, false, CF_EMU_PC);
  on_access(d, n, true, CF_EMU_PC);
  return memmove(d, s, n);
}
CF_EMU_HOOK void* __tsan_memset(void* d, int c, size_t n) {
  on_access(d, n, true, CF_EMU_PC);
  return memset(d, c, n);
}

// Atomics: performed here (sequentially consistent, which satisfies every order asked for). Kernels never reach
// them (device atomics go through the device API); host code compiled in the same files does.
#define CF_EMU_TSAN_ATOMICS(bits, type)                                                                              \
  CF_EMU_HOOK type __tsan_atomic##bits##_load(const volatile type* a, int) {                                       \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                                   \
  }                                                                                                                \
  CF_EMU_HOOK void __tsan_atomic##bits##_store(volatile type* a, type v, int) {                                    \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                                      \
  }                                                                                                                \
  CF_EMU_HOOK type __tsan_atomic##bits##_exchange(volatile type* a, type v, int) {                                 \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                                            \
  }                                                                                                                \
  CF_EMU_HOOK type __tsan_atomic##bits##_fetch_add(volatile type* a, type v, int) {                                \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                                             \
  }                                                                                                                \
  CF_EMU_HOOK type __tsan_atomic##bits##_fetch_sub(volatile type* a, type v, int) {                                \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                                             \
  }                                                                                                                \
  CF_EMU_HOOK type __tsan_atomic##bits##_fetch_and(volatile type* a, type v, int) {                                \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                                             \
  }                                                                                                                \
  CF_EMU_HOOK type __tsan_atomic##bits##_fetch_or(volatile type* a, type v, int) {                                 \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                                              \
  }                                                                                                                \
  CF_EMU_HOOK type __tsan_atomic##bits##_fetch_xor(volatile type* a, type v, int) {                                \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                                             \
  }                                                                                                                \
  CF_EMU_HOOK type __tsan_atomic##bits##_fetch_nand(volatile type* a, type v, int) {                               \
    return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);                                                            \
  }                                                                                                                \
  CF_EMU_HOOK int __tsan_atomic##bits##_compare_exchange_strong(volatile type* a, type* c, type v, int, int) {     \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) ? 1 : 0;                \
  }                                                                                                                \
  CF_EMU_HOOK int __tsan_atomic##bits##_compare_exchange_weak(volatile type* a, type* c, type v, int, int) {       \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) ? 1 : 0;                \
  }                                                                                                                \
  CF_EMU_HOOK type __tsan_atomic##bits##_compare_exchange_val(volatile type* a, type c, type v, int, int) {        \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                              \
    return c;                                                                                                      \
  }
CF_EMU_TSAN_ATOMICS(8, uint8_t)
CF_EMU_TSAN_ATOMICS(16, uint16_t)
CF_EMU_TSAN_ATOMICS(32, uint32_t)
CF_EMU_TSAN_ATOMICS(64, uint64_t)
CF_EMU_HOOK void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
CF_EMU_HOOK void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
#endif
