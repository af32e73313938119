// Fibers: user-space execution contexts, one per emulated CUDA thread, switched cooperatively by the scheduler.
// x86-64: a hand-written switch that saves the callee-saved registers, MXCSR and the x87 control word (a few ns).
// Sanitizer builds (CF_SANITIZE) and other architectures use ucontext, with AddressSanitizer fiber annotations.
// Stacks are mmap'd with an inaccessible guard page below them, so an overflow faults instead of corrupting memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(CF_SANITIZE) || !defined(__x86_64__)
#define CF_EMU_UCONTEXT 1
#include <ucontext.h>
#endif

namespace cf::dev::emu {

struct Stack {
  uint8_t* lo = nullptr;  // lowest usable byte; the guard page lies right below
  size_t size = 0;
};

using FiberEntry = void (*)(void* arg);

struct FiberContext {
#if defined(CF_EMU_UCONTEXT)
  ucontext_t uc;
  FiberEntry entry = nullptr;
  void* arg = nullptr;
#else
  void* sp = nullptr;
#endif
  const void* stack_lo = nullptr;  // for AddressSanitizer's fiber annotations
  size_t stack_size = 0;
  void* asan_fake_stack = nullptr;
};

// Prepares `ctx` to run entry(arg) on `stack` at its first switch. entry must never return: it ends by switching
// away with finished = true.
void fiber_prepare(FiberContext& ctx, const Stack& stack, FiberEntry entry, void* arg);

// Saves the running context into `from` and resumes `to`. `from_finished`: `from` will never be resumed.
void fiber_switch(FiberContext& from, FiberContext& to, bool from_finished);

// Called first thing by a fiber entry function (completes the switch for AddressSanitizer).
void fiber_entered(FiberContext& hub);

// Stacks of one size, reused across launches. Size: $CF_EMU_STACK_KB (default 64, 256 under sanitizers).
class StackPool {
 public:
  StackPool();
  ~StackPool();
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;

  Stack acquire();
  void release(const Stack& s);
  size_t stack_size() const { return stack_size_; }
  // True when addr is in the guard page of a stack of this pool (a fiber stack overflow).
  bool is_guard(uintptr_t addr) const;

 private:
  size_t stack_size_;
  size_t page_;
  std::vector<Stack> free_;
  std::vector<Stack> all_;
};

}  // namespace cf::dev::emu
