// kernels::attention (transformer_ops.h) on decode and prefill shapes of
// Llama-3-8B (32 heads, 8 KV heads, head_dim 128) and SmolLM2-135M (9 / 3,
// 64): microseconds per call, GB/s of K and V read and float32 TFLOP/s. On a
// CUDA GPU when one is visible, else on the simulated accelerator (the CPU
// counterpart; the long shapes are skipped there). Each case: a warm-up, then
// the median of 7 samples of back-to-back calls on one stream.
//
// Reproduce: bazel build //bench:attention_bench && ./bazel-bin/bench/attention_bench
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "core/buffer.h"
#include "core/platform.h"
#include "kernels/transformer_ops.h"

namespace stowage {
namespace {

struct Case {
  const char* name;
  int64_t batch, tokens, heads, kv_heads, head_dim, past;
  bool long_case;  // skipped on the CPU
};

const Case kCases[] = {
    {"decode llama3-8b ctx 1k  b1", 1, 1, 32, 8, 128, 1023, false},
    {"decode llama3-8b ctx 4k  b1", 1, 1, 32, 8, 128, 4095, false},
    {"decode llama3-8b ctx 8k  b1", 1, 1, 32, 8, 128, 8191, true},
    {"decode llama3-8b ctx 8k  b8", 8, 1, 32, 8, 128, 8191, true},
    {"decode llama3-8b ctx 4k  b32", 32, 1, 32, 8, 128, 4095, true},
    {"decode smollm2    ctx 8k  b1", 1, 1, 9, 3, 64, 8191, false},
    {"decode smollm2    ctx 2k  b32", 32, 1, 9, 3, 64, 2047, true},
    {"prefill llama3-8b 2048", 1, 2048, 32, 8, 128, 0, true},
    {"prefill smollm2   2048", 1, 2048, 9, 3, 64, 0, true},
    {"prefill smollm2   128", 1, 128, 9, 3, 64, 0, false},
    {"prefill llama3-8b 512 past 1536", 1, 512, 32, 8, 128, 1536, true},
};

}  // namespace
}  // namespace stowage

int main() {
  using namespace stowage;
  const bool cuda = cuda_device_available();
  auto platform = Platform::create(cuda ? DeviceChoice::kCuda : DeviceChoice::kSim);
  Stream stream = platform->accelerator(0).create_stream();
  MemoryResource& memory = platform->accelerator(0).memory();
  fmt::print("kernels::attention on {} (median of 7 samples of back-to-back calls)\n",
             cuda ? "CUDA" : "the simulated accelerator (CPU)");
  for (const Case& c : kCases) {
    if (!cuda && c.long_case) continue;
    const int64_t capacity = c.past + c.tokens;
    const int64_t kv = c.batch * capacity * c.kv_heads * c.head_dim;
    const int64_t q = c.batch * c.tokens * c.heads * c.head_dim;
    Buffer dq(memory, q * 4, stream.ref()), dk(memory, kv * 4, stream.ref()),
        dv(memory, kv * 4, stream.ref()), dout(memory, q * 4, stream.ref());
    const std::vector<float> fill(static_cast<size_t>(std::max(kv, q)), 0.01f);
    stream.ref().copy(dq.data(), fill.data(), q * 4);
    stream.ref().copy(dk.data(), fill.data(), kv * 4);
    stream.ref().copy(dv.data(), fill.data(), kv * 4);
    kernels::AttentionArgs a;
    a.batch = c.batch;
    a.tokens = c.tokens;
    a.heads = c.heads;
    a.kv_heads = c.kv_heads;
    a.head_dim = c.head_dim;
    a.past = c.past;
    a.capacity = capacity;
    a.scale = 0.088f;
    a.q = static_cast<const float*>(dq.data());
    a.q_stride = c.heads * c.head_dim;
    a.k_cache = static_cast<const float*>(dk.data());
    a.v_cache = static_cast<const float*>(dv.data());
    a.out = static_cast<float*>(dout.data());
    const int reps = cuda ? 50 : 3;
    kernels::attention(a, stream.ref());
    stream.synchronize();
    std::vector<double> us;
    for (int s = 0; s < 7; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) kernels::attention(a, stream.ref());
      stream.synchronize();
      us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
          reps);
    }
    std::sort(us.begin(), us.end());
    const double t = us[us.size() / 2];
    const double flops = 4.0 * c.batch * c.heads * c.head_dim *
                         (c.tokens * c.past + c.tokens * (c.tokens + 1) / 2.0);
    fmt::print("  {:<34} {:9.1f} us  {:7.1f} GB/s of K+V  {:6.2f} TFLOP/s\n", c.name, t,
               2.0 * kv * 4 / t / 1e3, flops / t / 1e6);
  }
  fmt::print(
      "reproduce: bazel build //bench:attention_bench && ./bazel-bin/bench/attention_bench\n");
  return 0;
}
