// TransformerModel's sparse (mixture-of-experts) layers: the router, shared
// expert and expert modules and the step's MoE block (transformer.h's file
// comment). Kept apart from transformer.cc, which holds the dense family.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <functional>
#include <set>

#include "core/error.h"
#include "kernels/moe_ops.h"
#include "kernels/transformer_ops.h"
#include "models/transformer.h"

namespace stowage::models {
namespace {

TensorView rows_view(void* p, int64_t rows, int64_t cols, Tier tier) {
  return TensorView(p, DType::kF32, Shape{rows, cols}, tier);
}

}  // namespace

bool TransformerModel::has_sparse_layers() const {
  return std::any_of(spec_.layers.begin(), spec_.layers.end(),
                     [](const DecoderLayerSpec& l) { return l.sparse; });
}

void TransformerModel::build_moe(size_t i) {
  const MoeLayerSpec& moe = spec_.layers[i].moe;
  const TransformerConfig& c = spec_.config;
  MoeModules& modules = moe_[i];

  // A one-layer module (the router, the shared expert's gate): out = x @ W^T
  // into `out` of the state, computed where W is.
  auto build_linear = [this](hooks::Module& m, const std::vector<std::string>& tensors,
                             const LinearSpec* spec, Buffer TransformerState::*out,
                             std::function<void(StreamRef, TransformerState&)> then) {
    for (const std::string& name : tensors) m.add_tensor(name);
    const LinearTensorIndices idx = linear_tensor_indices(m, "");
    m.set_forward([this, spec, idx, out, then](hooks::ForwardContext& ctx) {
      TransformerState& st = *current_.state;
      const StreamRef s = ctx.stream();
      const LinearWeights w = linear_weights(*spec, idx, ctx);
      const int64_t rows = current_.rows, in = spec->in_features, n = spec->out_features;
      float* x = static_cast<float*>(st.x.data());
      float* y = static_cast<float*>((st.*out).data());
      if (ctx.tensor_at(idx.weight).tier().is_accelerator() || s.is_null()) {
        kernels_.linear(s, w, rows_view(x, rows, in, st.tier), rows_view(y, rows, n, st.tier),
                        false);
      } else {
        LinearKernels& host = host_kernels();
        compute_on_host(s, st, x, rows * in, y, rows * n, [w, rows, in, n, &host](
                                                              const float* hx, float* hy) {
          host.linear(StreamRef(), w, rows_view(const_cast<float*>(hx), rows, in,
                                                Tier::pageable_host()),
                      rows_view(hy, rows, n, Tier::pageable_host()), false);
        });
      }
      if (then) then(s, st);
    });
  };

  hooks::Module& router = root_.add_descendant(moe.router_module);
  const MoeConfig& mc = *c.moe;
  build_linear(router, moe.router_tensors, &moe.router, &TransformerState::router_logits,
               [this, &mc](StreamRef s, TransformerState& st) {
                 kernels::moe_route({current_.rows, mc.num_experts, mc.experts_per_token,
                                     mc.renormalize,
                                     static_cast<const float*>(st.router_logits.data()),
                                     static_cast<int32_t*>(st.moe_ids.data()),
                                     static_cast<float*>(st.moe_weights.data())},
                                    s);
               });
  modules.router = &router;
  if (moe.has_shared) {
    hooks::Module& gate = root_.add_descendant(moe.shared_gate_module);
    build_linear(gate, moe.shared_gate_tensors, &moe.shared_gate, &TransformerState::shared_gate,
                 nullptr);
    modules.shared_gate = &gate;
    hooks::Module& shared = root_.add_descendant(moe.shared.module);
    build_expert(i, -1, shared);
    modules.shared = &shared;
  }
  for (size_t e = 0; e < moe.experts.size(); ++e) {
    hooks::Module& m = root_.add_descendant(moe.experts[e].module);
    build_expert(i, static_cast<int>(e), m);
    modules.experts.push_back(&m);
  }
}

void TransformerModel::build_expert(size_t i, int expert, hooks::Module& m) {
  const MoeLayerSpec& moe = spec_.layers[i].moe;
  const ExpertSpec& spec = expert < 0 ? moe.shared : moe.experts[expert];
  const MoeConfig& mc = *spec_.config.moe;
  for (const std::string& name : spec.tensors) m.add_tensor(name);
  std::vector<LinearTensorIndices> idx;
  for (const std::string* p : {&mc.gate_proj, &mc.up_proj, &mc.down_proj}) {
    idx.push_back(linear_tensor_indices(m, *p + "."));
  }
  m.set_forward([this, &spec, &mc, idx, expert](hooks::ForwardContext& ctx) {
    TransformerState& st = *current_.state;
    const StreamRef s = ctx.stream();
    const std::array<LinearWeights, 3> w = {linear_weights(spec.gate, idx[0], ctx),
                                            linear_weights(spec.up, idx[1], ctx),
                                            linear_weights(spec.down, idx[2], ctx)};
    const int64_t rows = current_.rows, hidden = spec_.config.hidden_size;
    const int64_t inter = spec.gate.out_features;
    float* x = static_cast<float*>(st.x.data());
    float* y = static_cast<float*>(st.tmp.data());
    if (ctx.tensor_at(idx[0].weight).tier().is_accelerator() || s.is_null()) {
      run_swiglu(w.data(), inter, x, y, mlp_buffers(st, false), rows, kernels_, s);
    } else {
      const LayerBuffers hb = mlp_buffers(st, true);
      LinearKernels& host = host_kernels();
      compute_on_host(s, st, x, rows * hidden, y, rows * hidden,
                      [this, w, inter, hb, rows, &host](const float* hx, float* hy) {
                        run_swiglu(w.data(), inter, hx, hy, hb, rows, host, StreamRef());
                      });
    }
    float* h = static_cast<float*>(st.h.data());
    if (expert < 0) {
      kernels::sigmoid_gate_add(
          {rows, hidden, static_cast<const float*>(st.shared_gate.data()), y, h}, s);
    } else {
      kernels::moe_accumulate({rows, hidden, mc.experts_per_token, expert,
                               static_cast<const int32_t*>(st.moe_ids.data()),
                               static_cast<const float*>(st.moe_weights.data()), y, h},
                              s);
    }
  });
}

void TransformerModel::run_moe_block(size_t i, hooks::HookRegistry& registry, StreamRef stream,
                                     TransformerState& st) {
  const TransformerConfig& c = spec_.config;
  const MoeModules& modules = moe_[i];
  const int64_t rows = current_.rows, k = c.moe->experts_per_token;
  const TensorView x = rows_view(st.x.data(), rows, c.hidden_size, st.tier);
  const TensorView h = rows_view(st.h.data(), rows, c.hidden_size, st.tier);
  registry.run_forward(*modules.router, stream, {x},
                       {rows_view(st.router_logits.data(), rows, c.moe->num_experts, st.tier)});
  if (modules.shared != nullptr) {
    registry.run_forward(*modules.shared_gate, stream, {x},
                         {rows_view(st.shared_gate.data(), rows, 1, st.tier)});
    registry.run_forward(*modules.shared, stream, {x}, {h});
  }
  // Which experts run is data: the ids come back to the host.
  const size_t id_bytes = static_cast<size_t>(rows * k) * sizeof(int32_t);
  stream.copy(st.host_moe_ids.data(), st.moe_ids.data(), id_bytes);
  stream.synchronize();
  const auto* ids = static_cast<const int32_t*>(st.host_moe_ids.data());
  if (routing_log_ != nullptr) {
    routing_log_->resize(spec_.layers.size());
    // Sequence 0's rows come first (rows are sequence-major).
    (*routing_log_)[i].insert((*routing_log_)[i].end(), ids, ids + current_.tokens * k);
  }
  std::set<int32_t> routed(ids, ids + rows * k);
  for (int32_t e : routed) {
    STOWAGE_EXPECTS(e >= 0 && e < static_cast<int32_t>(modules.experts.size()), InternalError,
                    "{}: the router chose expert {} of {}", spec_.layers[i].moe.router_module, e,
                    modules.experts.size());
    registry.run_forward(*modules.experts[e], stream, {x}, {h});
  }
}

}  // namespace stowage::models
