#include "fiber.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "clusterfusion/common/error.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define CF_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CF_EMU_ASAN 1
#endif
#endif

#if defined(CF_EMU_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

namespace cf::dev::emu {

#if !defined(CF_EMU_UCONTEXT)
// cf_emu_switch(void** save_sp, void* load_sp): push the callee-saved state on the current stack, store the stack
// pointer, load the other one and pop its state. A new fiber's stack is laid out by fiber_prepare so that the final
// `ret` enters cf_emu_fiber_start with entry in r12 and its argument in r13.
extern "C" void cf_emu_switch(void** save_sp, void* load_sp);
extern "C" void cf_emu_fiber_start();
asm(R"(
  .text
  .globl cf_emu_switch
  .type cf_emu_switch, @function
  .p2align 4
cf_emu_switch:
  .cfi_startproc
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size cf_emu_switch, .-cf_emu_switch

  .globl cf_emu_fiber_start
  .type cf_emu_fiber_start, @function
  .p2align 4
cf_emu_fiber_start:
  .cfi_startproc
  .cfi_undefined rip
  movq %r13, %rdi
  callq *%r12
  ud2
  .cfi_endproc
  .size cf_emu_fiber_start, .-cf_emu_fiber_start
)");

void fiber_prepare(FiberContext& ctx, const Stack& stack, FiberEntry entry, void* arg) {
  auto* top = reinterpret_cast<uint64_t*>(stack.lo + stack.size);  // 16-byte aligned (page aligned)
  uint64_t* sp = top;
  *--sp = 0;  // two zero words: a 16-byte aligned stack at the call in cf_emu_fiber_start, and a null frame
  *--sp = 0;
  *--sp = reinterpret_cast<uint64_t>(&cf_emu_fiber_start);  // return address of the first switch
  *--sp = 0;                                                // rbp
  *--sp = 0;                                                // rbx
  *--sp = reinterpret_cast<uint64_t>(entry);                // r12
  *--sp = reinterpret_cast<uint64_t>(arg);                  // r13
  *--sp = 0;                                                // r14
  *--sp = 0;                                                // r15
  uint32_t fp_state[2];
  fp_state[0] = 0x1f80;  // MXCSR default: all exceptions masked, round to nearest
  fp_state[1] = 0x037f;  // x87 control word default
  *--sp = 0;
  std::memcpy(sp, fp_state, 8);
  ctx.sp = sp;
  ctx.stack_lo = stack.lo;
  ctx.stack_size = stack.size;
}

void fiber_switch(FiberContext& from, FiberContext& to, bool /*from_finished*/) { cf_emu_switch(&from.sp, to.sp); }

void fiber_entered(FiberContext& /*hub*/) {}

#else  // ucontext

namespace {
__thread FiberEntry t_starting_entry = nullptr;
__thread void* t_starting_arg = nullptr;

void ucontext_start() {
  FiberEntry entry = t_starting_entry;
  void* arg = t_starting_arg;
  entry(arg);
  std::abort();  // entries never return
}
}  // namespace

void fiber_prepare(FiberContext& ctx, const Stack& stack, FiberEntry entry, void* arg) {
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack.lo;
  ctx.uc.uc_stack.ss_size = stack.size;
  ctx.uc.uc_link = nullptr;
  makecontext(&ctx.uc, ucontext_start, 0);
  ctx.stack_lo = stack.lo;
  ctx.stack_size = stack.size;
  // makecontext passes only ints: the entry and its argument travel through thread-locals, published by
  // fiber_switch right before every switch (read only at a fiber's first instruction).
  ctx.asan_fake_stack = nullptr;
  ctx.entry = entry;
  ctx.arg = arg;
}

void fiber_switch(FiberContext& from, FiberContext& to, bool from_finished) {
#if defined(CF_EMU_ASAN)
  __sanitizer_start_switch_fiber(from_finished ? nullptr : &from.asan_fake_stack, to.stack_lo, to.stack_size);
#else
  (void)from_finished;
#endif
  t_starting_entry = to.entry;
  t_starting_arg = to.arg;
  swapcontext(&from.uc, &to.uc);
#if defined(CF_EMU_ASAN)
  const void* prev_lo = nullptr;
  size_t prev_size = 0;
  __sanitizer_finish_switch_fiber(from.asan_fake_stack, &prev_lo, &prev_size);
#endif
}

void fiber_entered(FiberContext& hub) {
#if defined(CF_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &hub.stack_lo, &hub.stack_size);
#else
  (void)hub;
#endif
}

#endif

// ---- stacks ------------------------------------------------------------------------------------------------------
StackPool::StackPool() {
  page_ = size_t(sysconf(_SC_PAGESIZE));
#if defined(CF_SANITIZE)
  size_t kb = 256;
#else
  size_t kb = 64;
#endif
  if (const char* env = std::getenv("CF_EMU_STACK_KB"); env != nullptr && *env != '\0') {
    const long v = std::strtol(env, nullptr, 10);
    if (v >= 16 && v <= 65536) kb = size_t(v);
  }
  stack_size_ = (kb * 1024 + page_ - 1) / page_ * page_;
}

StackPool::~StackPool() {
  for (const Stack& s : all_) munmap(s.lo - page_, s.size + page_);
}

Stack StackPool::acquire() {
  if (!free_.empty()) {
    Stack s = free_.back();
    free_.pop_back();
    return s;
  }
  const size_t total = stack_size_ + page_;
  void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw Error("cf_emu: cannot map a fiber stack of " + std::to_string(total) + " bytes");
  mprotect(mem, page_, PROT_NONE);  // guard page below the stack
  Stack s{static_cast<uint8_t*>(mem) + page_, stack_size_};
  all_.push_back(s);
  return s;
}

void StackPool::release(const Stack& s) { free_.push_back(s); }

bool StackPool::is_guard(uintptr_t addr) const {
  for (const Stack& s : all_) {
    const auto lo = reinterpret_cast<uintptr_t>(s.lo);
    if (addr >= lo - page_ && addr < lo) return true;
  }
  return false;
}

}  // namespace cf::dev::emu
