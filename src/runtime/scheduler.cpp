#include "clusterfusion/runtime/scheduler.hpp"

#include <algorithm>
#include <unordered_map>

namespace cf {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

std::string_view finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "?";
}

// ---- GenerationStream -----------------------------------------------------------------------------------------

GenerationStream::Update GenerationStream::next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return !text_.empty() || (outcome_ && !delivered_); });
  Update u;
  u.text = std::move(text_);
  text_.clear();
  if (outcome_ && !delivered_) {
    u.outcome = outcome_;
    delivered_ = true;
  }
  return u;
}

void GenerationStream::cancel() {
  if (cancelled_.exchange(true)) return;
  // Under the lock: finish() clears wake_engine_ under it too, so the scheduler outlives this call.
  std::lock_guard lock(mutex_);
  if (wake_engine_) wake_engine_();
}

void GenerationStream::append(std::string_view text) {
  if (text.empty()) return;
  {
    std::lock_guard lock(mutex_);
    text_.append(text);
  }
  changed_.notify_all();
}

void GenerationStream::finish(GenerationOutcome outcome) {
  {
    std::lock_guard lock(mutex_);
    outcome_ = std::move(outcome);
    wake_engine_ = nullptr;
  }
  changed_.notify_all();
}

// ---- StopStringFilter -----------------------------------------------------------------------------------------

StopStringFilter::StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

std::string StopStringFilter::push(std::string_view text) {
  if (matched_) return {};
  pending_.append(text);
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    matched_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail of the text that is the beginning of a stop string.
  size_t keep = 0;
  for (const auto& s : stops_) {
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > keep; --n) {
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StopStringFilter::flush() {
  std::string out = matched_ ? std::string() : std::move(pending_);
  pending_.clear();
  return out;
}

// ---- Scheduler --------------------------------------------------------------------------------------------------

struct Scheduler::Queued {
  GenerationRequest request;
  std::shared_ptr<GenerationStream> stream;
  Clock::time_point submitted;
};

struct Scheduler::Active {
  Active(int slot, Queued q, std::shared_ptr<const Tokenizer> tokenizer)
      : slot(slot),
        request(std::move(q.request)),
        stream(std::move(q.stream)),
        submitted(q.submitted),
        history(request.prompt),
        sampler(request.sampling),
        decoder(std::move(tokenizer)),
        stops(request.stop) {}

  int slot;
  GenerationRequest request;
  std::shared_ptr<GenerationStream> stream;
  Clock::time_point submitted, first_token;
  std::vector<int32_t> history;  // prompt and sampled tokens: what the repetition penalty looks at
  size_t prefilled = 0;          // prompt tokens in the KV cache
  int32_t next_token = -1;       // sampled, to be run by the next decode step
  int generated = 0;
  std::unordered_map<int32_t, int> counts;  // generated token -> times (presence / frequency penalties)
  Sampler sampler;
  StreamDecoder decoder;
  StopStringFilter stops;
  bool finished = false;

  bool prefilling() const { return prefilled < request.prompt.size(); }
};

Scheduler::Scheduler(Runner& runner, std::shared_ptr<const Tokenizer> tokenizer, SchedulerOptions options)
    : runner_(runner), tokenizer_(std::move(tokenizer)), options_(options) {
  CF_CHECK(tokenizer_ != nullptr, "Scheduler: no tokenizer");
  CF_CHECK_INPUT(options_.max_queue >= 0, "scheduler: the queue limit must not be negative");
  CF_CHECK_INPUT(options_.prefill_chunk >= 1, "scheduler: the prefill chunk must be at least 1 token");
  slot_busy_.assign(size_t(runner_.max_seqs()), false);
  for (int s = 0; s < runner_.max_seqs(); ++s) runner_.reset(s);
  stats_.slots = runner_.max_seqs();
  stats_.kv_pages = runner_.kv_pages();
  engine_ = std::thread([this] { engine_loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (!abort_message_) abort_message_ = "the server is shutting down";
  }
  wake_.notify_all();
  engine_.join();
}

std::shared_ptr<GenerationStream> Scheduler::submit(GenerationRequest request) {
  CF_CHECK_INPUT(!request.prompt.empty(), "the prompt is empty");
  CF_CHECK_INPUT(int64_t(request.prompt.size()) < runner_.context_limit(),
                 "the prompt has " + std::to_string(request.prompt.size()) +
                     " tokens, which leaves no room in the context of " + std::to_string(runner_.context_limit()) +
                     " tokens");
  CF_CHECK_INPUT(request.max_new_tokens >= 1, "max tokens must be at least 1");
  const int vocab = runner_.vocab();
  for (int32_t t : request.prompt)
    CF_CHECK_INPUT(t >= 0 && t < vocab, "prompt token " + std::to_string(t) + " is outside the vocabulary of " +
                                            std::to_string(vocab));
  request.sampling.validate();
  auto q = std::make_unique<Queued>();
  q->request = std::move(request);
  q->stream = std::make_shared<GenerationStream>();
  q->stream->wake_engine_ = [this] { wake_.notify_all(); };
  q->submitted = Clock::now();
  auto stream = q->stream;
  {
    std::lock_guard lock(mutex_);
    if (abort_message_) throw Error(*abort_message_);
    if (int(queue_.size()) >= options_.max_queue) {
      // A free slot takes the request at once; only requests that would have to wait count against the queue.
      const auto busy = std::count(slot_busy_.begin(), slot_busy_.end(), true);
      if (busy + int64_t(queue_.size()) >= int64_t(slot_busy_.size()) + options_.max_queue)
        throw QueueFullError("the server is busy: " + std::to_string(busy) + " requests running and " +
                             std::to_string(queue_.size()) + " waiting (the queue limit); try again later");
    }
    queue_.push_back(std::move(q));
    stats_.queued = int(queue_.size());
  }
  wake_.notify_all();
  return stream;
}

void Scheduler::abort_all(const std::string& message) {
  {
    std::lock_guard lock(mutex_);
    abort_message_ = message;
  }
  wake_.notify_all();
}

bool Scheduler::idle() const {
  std::lock_guard lock(mutex_);
  return queue_.empty() && std::none_of(slot_busy_.begin(), slot_busy_.end(), [](bool b) { return b; });
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Scheduler::engine_loop() {
  while (true) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !active_.empty(); });
      admit_locked();
      if (stopping_ && active_.empty()) return;  // admit_locked() has ended the queued requests
    }
    end_cancelled_and_aborted();
    // The oldest prompt still prefilling gets one chunk, then every decoding sequence one token.
    const auto prefilling =
        std::find_if(active_.begin(), active_.end(), [](const auto& a) { return !a->finished && a->prefilling(); });
    if (prefilling != active_.end()) prefill_step(**prefilling);
    decode_step();
    release_finished();
  }
}

// Moves queued requests into free slots (FIFO); requests cancelled while they waited are ended here.
void Scheduler::admit_locked() {
  for (auto it = queue_.begin(); it != queue_.end();) {
    Queued& q = **it;
    if (q.stream->cancelled() || abort_message_) {
      GenerationOutcome o;
      o.prompt_tokens = int(q.request.prompt.size());
      o.finish = q.stream->cancelled() ? FinishReason::Cancelled : FinishReason::Error;
      if (!q.stream->cancelled()) o.error = *abort_message_;
      if (options_.on_finish) options_.on_finish(o);
      q.stream->finish(std::move(o));
      it = queue_.erase(it);
      continue;
    }
    const auto free_slot = std::find(slot_busy_.begin(), slot_busy_.end(), false);
    if (free_slot == slot_busy_.end()) {
      ++it;
      continue;
    }
    const int slot = int(free_slot - slot_busy_.begin());
    slot_busy_[size_t(slot)] = true;
    active_.push_back(std::make_unique<Active>(slot, std::move(q), tokenizer_));
    it = queue_.erase(it);
  }
  stats_.queued = int(queue_.size());
  stats_.running = int(std::count(slot_busy_.begin(), slot_busy_.end(), true));
}

void Scheduler::end_cancelled_and_aborted() {
  std::optional<std::string> abort;
  {
    std::lock_guard lock(mutex_);
    abort = abort_message_;
  }
  for (auto& a : active_) {
    if (a->stream->cancelled()) {
      finish(*a, FinishReason::Cancelled);
    } else if (abort) {
      finish(*a, FinishReason::Error, *abort);
    }
  }
}

void Scheduler::prefill_step(Active& a) {
  const auto& prompt = a.request.prompt;
  const size_t count = std::min(prompt.size() - a.prefilled, size_t(options_.prefill_chunk));
  const std::span<const int32_t> chunk(prompt.data() + a.prefilled, count);
  try {
    const std::vector<float>& logits = runner_.prefill(a.slot, chunk);
    a.prefilled += count;
    {
      std::lock_guard lock(mutex_);
      ++stats_.prefill_chunks;
      stats_.prompt_tokens += count;
    }
    if (!a.prefilling()) accept_token(a, sample(a, logits));
  } catch (const std::exception& e) {
    finish(a, FinishReason::Error, std::string("prefill failed: ") + e.what());
  }
}

void Scheduler::decode_step() {
  std::vector<Active*> rows;
  std::vector<int32_t> seqs, tokens;
  for (auto& a : active_) {
    if (a->finished || a->prefilling() || a->next_token < 0) continue;
    rows.push_back(a.get());
    seqs.push_back(a->slot);
    tokens.push_back(a->next_token);
  }
  if (rows.empty()) return;
  try {
    const std::vector<float>& logits = runner_.decode(seqs, tokens);
    {
      std::lock_guard lock(mutex_);
      ++stats_.decode_steps;
      stats_.decode_rows += rows.size();
    }
    const size_t vocab = size_t(runner_.vocab());
    for (size_t i = 0; i < rows.size(); ++i)
      accept_token(*rows[i], sample(*rows[i], std::span<const float>(logits.data() + i * vocab, vocab)));
  } catch (const std::exception& e) {
    for (Active* a : rows) finish(*a, FinishReason::Error, std::string("decode step failed: ") + e.what());
  }
}

int32_t Scheduler::sample(Active& a, std::span<const float> logits) {
  const std::span<const float> row = logits.first(size_t(runner_.vocab()));
  if ((a.request.presence_penalty == 0.0f && a.request.frequency_penalty == 0.0f) || a.counts.empty())
    return a.sampler.sample(row, a.history);
  std::vector<float> penalized(row.begin(), row.end());
  for (const auto& [token, count] : a.counts)
    penalized[size_t(token)] -= a.request.presence_penalty + a.request.frequency_penalty * float(count);
  return a.sampler.sample(penalized, a.history);
}

// A sampled token: ends the request (end of generation, stop string, max tokens, full context) or becomes the next
// decode step's input.
void Scheduler::accept_token(Active& a, int32_t token) {
  if (a.generated == 0) a.first_token = Clock::now();
  ++a.generated;
  {
    std::lock_guard lock(mutex_);
    ++stats_.generated_tokens;
  }
  if (tokenizer_->is_end_of_generation(token)) return finish(a, FinishReason::Stop);
  a.stream->append(a.stops.push(a.decoder.push(token)));
  if (a.stops.matched()) return finish(a, FinishReason::Stop);
  ++a.counts[token];
  a.history.push_back(token);
  if (a.generated >= a.request.max_new_tokens || runner_.length(a.slot) + 1 > runner_.context_limit())
    return finish(a, FinishReason::Length);
  a.next_token = token;
}

void Scheduler::finish(Active& a, FinishReason reason, std::string error) {
  if (a.finished) return;
  a.finished = true;
  if (reason == FinishReason::Stop || reason == FinishReason::Length) {
    a.stream->append(a.stops.push(a.decoder.flush()));
    a.stream->append(a.stops.flush());
  }
  GenerationOutcome o;
  o.finish = reason;
  o.prompt_tokens = int(a.request.prompt.size());
  o.completion_tokens = a.generated;
  const auto now = Clock::now();
  if (a.generated > 0) {
    o.first_token_seconds = seconds_between(a.submitted, a.first_token);
    o.decode_seconds = seconds_between(a.first_token, now);
  }
  o.error = std::move(error);
  if (options_.on_finish) options_.on_finish(o);
  a.stream->finish(std::move(o));
}

// Frees the slots and KV pages of every finished request.
void Scheduler::release_finished() {
  for (auto& a : active_)
    if (a->finished) runner_.reset(a->slot);
  std::lock_guard lock(mutex_);
  for (auto& a : active_)
    if (a->finished) slot_busy_[size_t(a->slot)] = false;
  std::erase_if(active_, [](const auto& a) { return a->finished; });
  stats_.running = int(std::count(slot_busy_.begin(), slot_busy_.end(), true));
  stats_.kv_pages_in_use = runner_.kv_pages_in_use();
}

}  // namespace cf
