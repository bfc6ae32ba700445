// TransformerModel's sparse (mixture-of-experts) layers: the router, shared
// expert and expert modules and the step's MoE block (transformer.h's file
// comment). Kept apart from transformer.cc, which holds the dense family.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <functional>
#include <set>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/memory_read.h"
#include "kernels/moe_ops.h"
#include "kernels/transformer_ops.h"
#include "models/transformer.h"
#include "offload/memory_budget.h"
#include "quant/weight_layout.h"

namespace stowage::models {
namespace {

TensorView rows_view(void* p, int64_t rows, int64_t cols, Tier tier) {
  return TensorView(p, DType::kF32, Shape{rows, cols}, tier);
}

// Sets ctx's views of its module's tensors to `f`'s.
void set_views(hooks::ForwardContext& ctx, const ModuleForward& f) {
  for (const auto& [tensor, view] : f.tensors) {
    const int index = ctx.module().tensor_index(tensor);
    if (index >= 0) ctx.set_view(static_cast<size_t>(index), view);
  }
}

// Runs an expert's forward on `x` into `h` with its tensors at `f`'s views.
void forward_with_views(hooks::Module& module, const ModuleForward& f, StreamRef stream,
                        const TensorView& x, const TensorView& h) {
  hooks::ForwardContext ctx(module, stream, {x}, {h});
  set_views(ctx, f);
  module.forward()(ctx);
}

}  // namespace

namespace {

// An upper bound of a linear layer's bytes in a slot: its records (the
// weight's parts as quant's WeightLayout has them, the bias; at most 8) each
// at a 256-byte aligned offset.
uint64_t linear_slot_bytes(const LinearSpec& l) {
  quant::WeightLayout layout = l.layout;
  // The packed codes counted as U8 (a wider storage dtype pads them by at
  // most 3 bytes, within the alignment).
  if (quant::is_four_bit(layout.format)) layout.storage = DType::kU8;
  uint64_t bytes = 8 * kSlotAlignment + 1024;  // alignment, the quant state's JSON
  if (l.has_bias) bytes += static_cast<uint64_t>(l.out_features()) * 4;
  return bytes + layout.total_bytes(/*state_json_bytes=*/0);
}

}  // namespace

uint64_t expert_slot_bytes(const TransformerSpec& spec) {
  uint64_t largest = 0;
  for (const DecoderLayerSpec& l : spec.layers) {
    for (const ExpertSpec& e : l.moe.experts) {
      largest = std::max(
          largest, linear_slot_bytes(e.gate) + linear_slot_bytes(e.up) + linear_slot_bytes(e.down));
    }
  }
  return largest;
}

std::vector<TensorOverride> experts_off_accelerator(int64_t first_layers) {
  if (first_layers <= 0) return {};
  std::string layers;
  for (int64_t i = 0; i < first_layers; ++i) layers += (i == 0 ? "" : "|") + std::to_string(i);
  return {TensorOverride{
      fmt::format(R"(model\.layers\.({})\.(mlp|block_sparse_moe)\.experts\..*)", layers),
      Tier::pinned_host()}};
}

void TransformerModel::set_expert_cache(ExpertCache* cache, std::string prefix, bool predict) {
  expert_cache_ = cache;
  module_prefix_ = std::move(prefix);
  predict_ = predict && cache != nullptr;
  predicted_.assign(spec_.layers.size(), {});
  predictions_.assign(spec_.layers.size(), {});
  prediction_trust_.assign(spec_.layers.size(), 1.0);
}

void TransformerModel::set_expert_split(std::optional<ExpertSplitCosts> costs) {
  STOWAGE_EXPECTS(!costs || (costs->link_seconds_per_byte > 0 && costs->host_seconds_per_byte > 0),
                  InvalidInputError,
                  "expert split: expected positive costs per byte, found link {} and host {}",
                  costs ? costs->link_seconds_per_byte : 0.0,
                  costs ? costs->host_seconds_per_byte : 0.0);
  expert_split_ = costs;
}

void TransformerModel::set_host_expert_lane(HostExpertLane lane) {
  STOWAGE_EXPECTS(lane.stream.is_null() || (lane.input_ready != nullptr && lane.done != nullptr),
                  InvalidInputError,
                  "host expert lane: expected a stream with its two events, found {} events",
                  (lane.input_ready != nullptr ? 1 : 0) + (lane.done != nullptr ? 1 : 0));
  host_expert_lane_ = lane;
}

void TransformerModel::split_absent(size_t i, const std::vector<int32_t>& absent, bool by_rows,
                                    std::set<int32_t>* on_host,
                                    std::vector<PartialExpert>* partial) const {
  if (!expert_split_) return;
  const double link_cost = expert_split_->link_seconds_per_byte;
  const double host_cost = expert_split_->host_seconds_per_byte;
  const auto bytes_of = [](const LinearSpec& l) {
    return static_cast<double>(linear_slot_bytes(l));
  };
  double link = 0, host = 0;  // the seconds each path has taken on so far this layer
  for (int32_t e : absent) {
    const ExpertSpec& x = spec_.layers[i].moe.experts[static_cast<size_t>(e)];
    const double whole = bytes_of(x.gate) + bytes_of(x.up) + bytes_of(x.down);
    double best = link + whole * link_cost, host_bytes = 0;
    bool whole_on_host = false;
    if (host + whole * host_cost < best) {
      best = host + whole * host_cost;
      whole_on_host = true;
    }
    int64_t rows = 0;
    const int64_t inter = x.gate.out_features();
    const int64_t align = std::max(x.gate.layout.row_alignment(), x.up.layout.row_alignment());
    if (by_rows && inter % align == 0 && x.up.out_features() == inter && !x.gate.has_bias &&
        !x.up.has_bias) {
      // The host bytes that make both paths end together, in whole aligned rows.
      const double rows_bytes = bytes_of(x.gate) + bytes_of(x.up);
      const double even = (link + whole * link_cost - host) / (link_cost + host_cost);
      const double fraction = std::clamp(even / rows_bytes, 0.0, 1.0);
      const int64_t r = static_cast<int64_t>(fraction * static_cast<double>(inter / align)) * align;
      const double r_bytes = rows_bytes * static_cast<double>(r) / static_cast<double>(inter);
      const double t = std::max(link + (whole - r_bytes) * link_cost, host + r_bytes * host_cost);
      if (r > 0 && t < best) {
        rows = r;
        host_bytes = r_bytes;
        whole_on_host = false;
      }
    }
    if (whole_on_host) {
      on_host->insert(e);
      host += whole * host_cost;
    } else {
      if (rows > 0) partial->push_back({e, rows, -1});
      link += (whole - host_bytes) * link_cost;
      host += host_bytes * host_cost;
    }
  }
}

bool TransformerModel::fetch_partial(size_t i, PartialExpert& p,
                                     const std::vector<std::string>& keep) {
  const ExpertSpec& x = spec_.layers[i].moe.experts[static_cast<size_t>(p.expert)];
  const MoeConfig& mc = *spec_.config.moe;
  const int64_t inter = x.gate.out_features();
  std::vector<ExpertCache::RecordPart> parts;
  for (const auto& [linear, prefix] :
       {std::pair<const LinearSpec*, const std::string*>{&x.gate, &mc.gate_proj},
        {&x.up, &mc.up_proj}}) {
    const auto ranges = linear->layout.row_ranges(p.host_rows, inter - p.host_rows);
    STOWAGE_EXPECTS(ranges.has_value(), InternalError,
                    "{}: rows from {} of {} are not aligned to its blocks", x.module, p.host_rows,
                    *prefix);
    for (const quant::PartRange& r : *ranges) {
      parts.push_back({*prefix + "." + std::string(r.suffix), r.offset, r.bytes});
    }
  }
  p.part = expert_cache_->fetch_part(module_prefix_ + moe_[i].experts[p.expert]->path(), parts,
                                     keep, static_cast<int>(i));
  return p.part >= 0;
}

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
      const int64_t rows = current_.rows, in = spec->in_features(), n = spec->out_features();
      float* x = static_cast<float*>(st.x.data());
      float* y = static_cast<float*>((st.*out).data());
      if (ctx.tensor_at(idx.weight).tier().is_accelerator() || s.is_null()) {
        kernels_.linear(s, w, rows_view(x, rows, in, st.tier), rows_view(y, rows, n, st.tier),
                        false);
      } else {
        LinearKernels& host = host_kernels();
        compute_on_host(
            s, st, x, rows * in, y, rows * n, [w, rows, in, n, &host](const float* hx, float* hy) {
              host.linear(StreamRef(), w,
                          rows_view(const_cast<float*>(hx), rows, in, Tier::pageable_host()),
                          rows_view(hy, rows, n, Tier::pageable_host()), false);
            });
      }
      if (then) then(s, st);
    });
  };

  hooks::Module& router = root_.add_descendant(moe.router_module);
  const MoeConfig& mc = *c.moe;
  build_linear(
      router, moe.router_tensors, &moe.router, &TransformerState::router_logits,
      [this, &mc](StreamRef s, TransformerState& st) {
        kernels::moe_route(
            {current_.rows, mc.num_experts, mc.experts_per_token, mc.renormalize,
             static_cast<const float*>(st.router_logits.data()),
             static_cast<int32_t*>(st.moe_ids.data()), static_cast<float*>(st.moe_weights.data())},
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
    modules.expert_linears.push_back(build_expert(i, static_cast<int>(e), m));
    modules.experts.push_back(&m);
  }
}

std::array<LinearTensorIndices, 3> TransformerModel::build_expert(size_t i, int expert,
                                                                  hooks::Module& m) {
  const MoeLayerSpec& moe = spec_.layers[i].moe;
  const ExpertSpec& spec = expert < 0 ? moe.shared : moe.experts[expert];
  const MoeConfig& mc = *spec_.config.moe;
  for (const std::string& name : spec.tensors) m.add_tensor(name);
  const std::array<LinearTensorIndices, 3> idx = {linear_tensor_indices(m, mc.gate_proj + "."),
                                                  linear_tensor_indices(m, mc.up_proj + "."),
                                                  linear_tensor_indices(m, mc.down_proj + ".")};
  m.set_forward([this, &spec, &mc, idx, expert](hooks::ForwardContext& ctx) {
    TransformerState& st = *current_.state;
    const StreamRef s = ctx.stream();
    const std::array<LinearWeights, 3> w = {linear_weights(spec.gate, idx[0], ctx),
                                            linear_weights(spec.up, idx[1], ctx),
                                            linear_weights(spec.down, idx[2], ctx)};
    const int64_t rows = current_.rows, hidden = spec_.config.hidden_size;
    const int64_t inter = spec.gate.out_features();
    float* x = static_cast<float*>(st.x.data());
    float* y = static_cast<float*>(st.tmp.data());
    if (ctx.tensor_at(idx[0].weight).tier().is_accelerator() || s.is_null()) {
      run_swiglu(w.data(), inter, x, y, mlp_buffers(st, false), rows, kernels_, s);
    } else {
      const bool decode = current_.tokens == 1;
      if (decode) host_expert_meter_.enqueue(ctx);
      const LayerBuffers hb = mlp_buffers(st, true);
      LinearKernels& host = host_kernels();
      compute_on_host(s, st, x, rows * hidden, y, rows * hidden,
                      [this, w, inter, hb, rows, &host, decode](const float* hx, float* hy) {
                        const auto start = std::chrono::steady_clock::now();
                        run_swiglu(w.data(), inter, hx, hy, hb, rows, host, StreamRef());
                        if (decode) host_expert_meter_.add_since(start);
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
  return idx;
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
  const int64_t predicted_layer = predict_ ? enqueue_prediction(i, stream, st) : -1;
  // Which experts run is data: the ids come back to the host.
  const size_t id_bytes = static_cast<size_t>(rows * k) * sizeof(int32_t);
  stream.copy(st.host_moe_ids.data(), st.moe_ids.data(), id_bytes);
  // A decode step may put some experts on the lane, whose sum weighs them on the host.
  const bool lane = expert_cache_ != nullptr && expert_split_ && current_.tokens == 1 &&
                    !host_expert_lane_.stream.is_null();
  if (lane && !forced_routing_) {
    stream.copy(st.host_moe_weights.data(), st.moe_weights.data(),
                static_cast<size_t>(rows * k) * sizeof(float));
  }
  if (predicted_layer >= 0) {
    stream.copy(st.host_predicted_ids.data(), st.predicted_ids.data(), id_bytes);
  }
  stream.synchronize();
  auto* ids = static_cast<int32_t*>(st.host_moe_ids.data());
  if (forced_routing_) {
    // A replayed routing trace: every row to the trace's experts, equally weighted.
    const std::vector<int32_t> forced = forced_routing_(i);
    STOWAGE_EXPECTS(static_cast<int64_t>(forced.size()) == k, InvalidInputError,
                    "routing trace: layer {} lists {} experts, the model routes to {}", i,
                    forced.size(), k);
    auto* weights = static_cast<float*>(st.host_moe_weights.data());
    for (int64_t r = 0; r < rows * k; ++r) {
      ids[r] = forced[r % k];
      weights[r] = 1.0f / static_cast<float>(k);
    }
    // Up by the accelerator's loads, not behind an expert fetch on the copy engine.
    kernels::upload_from_pinned(st.moe_ids.data(), ids, id_bytes, stream);
    kernels::upload_from_pinned(st.moe_weights.data(), weights,
                                static_cast<size_t>(rows * k) * sizeof(float), stream);
  }
  if (routing_log_ != nullptr) {
    routing_log_->resize(spec_.layers.size());
    // Sequence 0's rows come first (rows are sequence-major).
    (*routing_log_)[i].insert((*routing_log_)[i].end(), ids, ids + current_.tokens * k);
  }
  const std::set<int32_t> routed(ids, ids + rows * k);
  if (predict_ && !predicted_[i].empty()) {
    // How many of the (token, expert) pairs the previous layer's guess named.
    ExpertPredictionCounters& p = predictions_[i];
    uint64_t correct = 0;
    for (int64_t r = 0; r < rows * k; ++r) {
      correct += std::count(predicted_[i].begin(), predicted_[i].end(), ids[r]) > 0 ? 1 : 0;
    }
    p.routed += static_cast<uint64_t>(rows * k);
    p.correct += correct;
    prediction_trust_[i] = 0.8 * prediction_trust_[i] +
                           0.2 * static_cast<double>(correct) / static_cast<double>(rows * k);
    predicted_[i].clear();
  }
  for (int32_t e : routed) {
    STOWAGE_EXPECTS(e >= 0 && e < static_cast<int32_t>(modules.experts.size()), InternalError,
                    "{}: the router chose expert {} of {}", spec_.layers[i].moe.router_module, e,
                    modules.experts.size());
  }
  // Each routed expert from the cache where it can hold it, else through the
  // hooks. They run in ascending expert order whatever their path (the sum
  // into h in one order: a cached run gives the resident logits bit for
  // bit); the copies of all the misses start at fetch(), so a later expert's
  // copy overlaps with the earlier experts' compute.
  // With a split (set_expert_split), some absent ones compute on the host
  // instead, first: their host work overlaps the others' copies (the sum
  // into h then takes another order than the resident run's).
  std::set<int32_t> cached, on_host;
  std::vector<PartialExpert> partial;
  const auto split_by_rows = [&partial](int32_t e) {
    return std::any_of(partial.begin(), partial.end(),
                       [e](const PartialExpert& p) { return p.expert == e; });
  };
  if (expert_cache_ != nullptr) {
    std::vector<int32_t> candidates, absent;
    for (int32_t e : routed) {
      const std::string name = module_prefix_ + modules.experts[e]->path();
      if (!expert_cache_->cacheable(name)) continue;
      candidates.push_back(e);
      if (!expert_cache_->holds(name)) absent.push_back(e);
    }
    std::vector<std::string> names, host_names, keep;
    for (int32_t e : candidates) keep.push_back(module_prefix_ + modules.experts[e]->path());
    split_absent(i, absent, lane && rows == 1, &on_host, &partial);
    std::vector<int32_t> fetching;
    for (int32_t e : candidates) {
      const std::string name = module_prefix_ + modules.experts[e]->path();
      if (on_host.count(e) != 0) {
        host_names.push_back(name);
      } else if (!split_by_rows(e)) {
        fetching.push_back(e);
        names.push_back(name);
      }
    }
    const std::vector<ExpertCache::Fetch> fetched =
        expert_cache_->fetch(names, static_cast<int>(i));
    for (size_t j = 0; j < fetching.size(); ++j) {
      if (fetched[j] != ExpertCache::Fetch::kUncached) cached.insert(fetching[j]);
    }
    // The part copies after the whole ones: their down projections are read last.
    for (auto p = partial.begin(); p != partial.end();) {
      if (fetch_partial(i, *p, keep)) {
        ++p;
        continue;
      }
      on_host.insert(p->expert);  // no slot for the part: the host computes it whole
      host_names.push_back(module_prefix_ + modules.experts[p->expert]->path());
      p = partial.erase(p);
    }
    if (!host_names.empty()) expert_cache_->note_host_computed(host_names, static_cast<int>(i));
  }
  const bool beside = lane && (!on_host.empty() || !partial.empty());
  if (beside) {
    enqueue_host_experts(i, on_host, partial, stream, st,
                         static_cast<const float*>(st.host_moe_weights.data()));
  } else {
    for (int32_t e : on_host) run_host_expert(i, e, stream, x, h);
  }
  for (int32_t e : routed) {
    if (on_host.count(e) != 0) continue;
    if (split_by_rows(e)) continue;
    if (cached.count(e) != 0) {
      run_cached_expert(i, e, stream, x, h);
    } else {
      registry.run_forward(*modules.experts[e], stream, {x}, {h});
    }
  }
  if (beside) {
    // The host's work last: the accelerator's experts ran while it computed.
    join_host_experts(i, partial, stream, st);
    if (!on_host.empty()) {
      kernels::add_in_place(static_cast<float*>(st.h.data()),
                            static_cast<const float*>(st.host_expert_sum.data()),
                            rows * c.hidden_size, stream);
    }
  }
  if (predicted_layer >= 0) {
    // The guess for the next sparse layer: its copies overlap with that
    // layer's attention.
    const auto* guess = static_cast<const int32_t*>(st.host_predicted_ids.data());
    const std::set<int32_t> experts(guess, guess + rows * k);
    std::vector<std::string> names;
    for (int32_t e : experts) {
      const std::string name = module_prefix_ + moe_[predicted_layer].experts[e]->path();
      if (expert_cache_->cacheable(name)) names.push_back(name);
    }
    predicted_[predicted_layer].assign(experts.begin(), experts.end());
    if (prediction_trust_[predicted_layer] >= kPrefetchAccuracyFloor) {
      expert_cache_->prefetch(names, static_cast<int>(predicted_layer));
    } else {
      predictions_[predicted_layer].withheld += names.size();
    }
  }
}

void TransformerModel::run_cached_expert(size_t i, int32_t e, StreamRef stream, const TensorView& x,
                                         const TensorView& h) {
  hooks::Module& module = *moe_[i].experts[e];
  const std::string name = module_prefix_ + module.path();
  const ModuleForward f = expert_cache_->acquire(name, stream);
  try {
    forward_with_views(module, f, stream, x, h);
  } catch (...) {
    expert_cache_->release(name, stream);
    throw;
  }
  expert_cache_->release(name, stream);
}

void TransformerModel::enqueue_host_experts(size_t i, const std::set<int32_t>& on_host,
                                            const std::vector<PartialExpert>& partial,
                                            StreamRef stream, TransformerState& st,
                                            const float* host_weights) {
  const StreamRef lane = host_expert_lane_.stream;
  const TransformerConfig& c = spec_.config;
  const int64_t rows = current_.rows, hidden = c.hidden_size, k = c.moe->experts_per_token;
  TransformerState::HostExpertScratch& scratch = st.host_expert_scratch();
  STOWAGE_EXPECTS(rows * hidden <= static_cast<int64_t>(scratch.y.size()), InternalError,
                  "host experts: {} rows of a decode step, the scratch holds {}", rows,
                  scratch.y.size() / static_cast<size_t>(hidden));
  STOWAGE_EXPECTS(partial.empty() || rows == 1, InternalError,
                  "host experts: experts split by rows need one row, found {}", rows);
  // The layer's input, once the step's stream has written it.
  stream.record(*host_expert_lane_.input_ready);
  lane.wait(*host_expert_lane_.input_ready);
  const size_t bytes = static_cast<size_t>(rows * hidden) * sizeof(float);
  lane.copy(scratch.x.data(), st.x.data(), bytes);

  // host_rows 0: the whole expert, weighted into the sum; else its gate and
  // up rows [0, host_rows) into its activations (`act`).
  struct HostExpert {
    int32_t expert = 0;
    int64_t inter = 0;
    int64_t host_rows = 0;
    float* act = nullptr;
    std::array<LinearWeights, 3> weights;
  };
  std::vector<HostExpert> experts;
  const TensorView x = rows_view(st.x.data(), rows, hidden, st.tier);
  const int64_t act_stride = static_cast<int64_t>(st.split_act.size() / sizeof(float)) / k;
  auto* partial_act = static_cast<float*>(scratch.partial_act.data());
  const auto weights_of = [&](int32_t e, HostExpert* out) {
    hooks::Module& module = *moe_[i].experts[e];
    hooks::ForwardContext ctx(module, lane, {x}, {x});
    set_views(ctx, expert_cache_->host_forward(module_prefix_ + module.path(), nullptr));
    const ExpertSpec& spec = spec_.layers[i].moe.experts[static_cast<size_t>(e)];
    const std::array<LinearTensorIndices, 3>& idx = moe_[i].expert_linears[e];
    out->expert = e;
    out->inter = spec.gate.out_features();
    out->weights = {linear_weights(spec.gate, idx[0], ctx), linear_weights(spec.up, idx[1], ctx),
                    linear_weights(spec.down, idx[2], ctx)};
    if (out->host_rows == 0) {
      host_expert_meter_.enqueue(ctx);
      return;
    }
    for (int j = 0; j < 2; ++j) {
      const LinearSpec& l = j == 0 ? spec.gate : spec.up;
      const std::optional<LinearWeights> narrowed =
          linear_rows(l, out->weights[j], 0, out->host_rows);
      STOWAGE_EXPECTS(narrowed.has_value(), InternalError, "{}: rows [0, {}) are not aligned",
                      spec.module, out->host_rows);
      out->weights[j] = *narrowed;
      host_expert_meter_.bytes += narrowed->view().bytes();
    }
    ++host_expert_meter_.forwards;
  };
  for (int32_t e : on_host) {
    experts.emplace_back();
    weights_of(e, &experts.back());
  }
  for (size_t j = 0; j < partial.size(); ++j) {
    experts.emplace_back();
    experts.back().host_rows = partial[j].host_rows;
    experts.back().act = partial_act + static_cast<int64_t>(j) * act_stride;
    weights_of(partial[j].expert, &experts.back());
  }
  host_experts_beside_ += on_host.size();
  // The routing as of now: the next layer's overwrites the pinned copies.
  std::vector<int32_t> ids(static_cast<const int32_t*>(st.host_moe_ids.data()),
                           static_cast<const int32_t*>(st.host_moe_ids.data()) + rows * k);
  std::vector<float> weights(host_weights, host_weights + rows * k);
  LayerBuffers b;
  b.gate = scratch.gate.data();
  b.up = scratch.up.data();
  b.act = scratch.act.data();
  b.tier = Tier::pageable_host();
  auto* in = static_cast<const float*>(scratch.x.data());
  auto* sum = static_cast<float*>(scratch.sum.data());
  float* y = scratch.y.data();
  LinearKernels& host = host_kernels();
  lane.host_task([this, experts, ids = std::move(ids), weights = std::move(weights), b, in, sum, y,
                  rows, hidden, k, &host] {
    const auto start = std::chrono::steady_clock::now();
    const auto view = [rows](const float* p, int64_t cols) {
      return TensorView(const_cast<float*>(p), DType::kF32, Shape{rows, cols},
                        Tier::pageable_host());
    };
    std::fill(sum, sum + rows * hidden, 0.0f);
    for (const HostExpert& e : experts) {
      if (e.host_rows == 0) {
        run_swiglu(e.weights.data(), e.inter, in, y, b, rows, host, StreamRef());
        kernels::moe_accumulate({rows, hidden, k, e.expert, ids.data(), weights.data(), y, sum},
                                StreamRef());
      } else {
        host.swiglu_linear(StreamRef(), e.weights[0], e.weights[1], view(in, hidden),
                           view(b.gate, e.host_rows), view(b.up, e.host_rows),
                           view(e.act, e.host_rows));
      }
    }
    host_expert_meter_.add_since(start);
  });
  if (!on_host.empty()) kernels::upload_from_pinned(st.host_expert_sum.data(), sum, bytes, lane);
  for (size_t j = 0; j < partial.size(); ++j) {
    const int64_t offset = static_cast<int64_t>(j) * act_stride;
    kernels::upload_from_pinned(static_cast<float*>(st.split_act.data()) + offset,
                                partial_act + offset,
                                static_cast<uint64_t>(partial[j].host_rows) * sizeof(float), lane);
  }
  lane.record(*host_expert_lane_.done);
}

void TransformerModel::join_host_experts(size_t i, const std::vector<PartialExpert>& partial,
                                         StreamRef stream, TransformerState& st) {
  const TransformerConfig& c = spec_.config;
  const MoeConfig& mc = *c.moe;
  const int64_t hidden = c.hidden_size, k = mc.experts_per_token;
  const int64_t act_stride = static_cast<int64_t>(st.split_act.size() / sizeof(float)) / k;
  auto* split_act = static_cast<float*>(st.split_act.data());
  const TensorView x = rows_view(st.x.data(), 1, hidden, st.tier);
  const auto view = [&](float* p, int64_t cols) { return rows_view(p, 1, cols, st.tier); };
  // The accelerator's rows of each partial expert's gate and up, from its part copy.
  std::vector<LinearWeights> downs;
  for (size_t j = 0; j < partial.size(); ++j) {
    const PartialExpert& p = partial[j];
    hooks::Module& module = *moe_[i].experts[p.expert];
    const ExpertSpec& spec = spec_.layers[i].moe.experts[static_cast<size_t>(p.expert)];
    const std::array<LinearTensorIndices, 3>& idx = moe_[i].expert_linears[p.expert];
    hooks::ForwardContext ctx(module, stream, {x}, {x});
    set_views(ctx, expert_cache_->acquire_part(p.part, stream));
    const int64_t inter = spec.gate.out_features(), rest = inter - p.host_rows;
    float* act = split_act + static_cast<int64_t>(j) * act_stride;
    if (rest > 0) {
      LinearWeights gate = linear_weights(spec.gate, idx[0], ctx);
      LinearWeights up = linear_weights(spec.up, idx[1], ctx);
      gate.out_features = rest;
      up.out_features = rest;
      kernels_.swiglu_linear(stream, gate, up, x, view(static_cast<float*>(st.gate.data()), rest),
                             view(static_cast<float*>(st.up.data()), rest),
                             view(act + p.host_rows, rest));
    }
    downs.push_back(linear_weights(spec.down, idx[2], ctx));
  }
  // The host's rows (and its whole experts' sum) are up.
  stream.wait(*host_expert_lane_.done);
  float* tmp = static_cast<float*>(st.tmp.data());
  for (size_t j = 0; j < partial.size(); ++j) {
    const PartialExpert& p = partial[j];
    const int64_t inter =
        spec_.layers[i].moe.experts[static_cast<size_t>(p.expert)].gate.out_features();
    kernels_.linear(stream, downs[j], view(split_act + static_cast<int64_t>(j) * act_stride, inter),
                    view(tmp, hidden), false);
    kernels::moe_accumulate(
        {1, hidden, k, p.expert, static_cast<const int32_t*>(st.moe_ids.data()),
         static_cast<const float*>(st.moe_weights.data()), tmp, static_cast<float*>(st.h.data())},
        stream);
    expert_cache_->release_part(p.part, stream);
  }
}

void TransformerModel::run_host_expert(size_t i, int32_t e, StreamRef stream, const TensorView& x,
                                       const TensorView& h) {
  hooks::Module& module = *moe_[i].experts[e];
  forward_with_views(module, expert_cache_->host_forward(module_prefix_ + module.path(), nullptr),
                     stream, x, h);
}

int64_t TransformerModel::enqueue_prediction(size_t i, StreamRef stream, TransformerState& st) {
  size_t j = i + 1;
  while (j < spec_.layers.size() && !spec_.layers[j].sparse) ++j;
  if (j >= spec_.layers.size()) return -1;
  const MoeLayerSpec& next = spec_.layers[j].moe;
  if (next.router.layout.format != quant::WeightFormat::kFloat || next.router.has_bias) return -1;
  const ResidencyTable& table = expert_cache_->manager().table();
  const std::optional<RecordId> id = table.find(module_prefix_ + next.router_module, "weight");
  if (!id) return -1;
  const TensorRecord rec = table.get(*id);
  auto copy = rec.copies.find(st.tier);
  if (copy == rec.copies.end()) return -1;  // not resident: no guess
  const TransformerConfig& c = spec_.config;
  const int64_t rows = current_.rows, experts = c.moe->num_experts;
  LinearWeights w;
  w.out_features = experts;
  w.in_features = c.hidden_size;
  w.weight = copy->second.view();
  // The router's logits of this layer were consumed by its routing (stream order).
  kernels_.linear(stream, w, rows_view(st.x.data(), rows, c.hidden_size, st.tier),
                  rows_view(st.router_logits.data(), rows, experts, st.tier), false);
  kernels::moe_route({rows, experts, c.moe->experts_per_token, c.moe->renormalize,
                      static_cast<const float*>(st.router_logits.data()),
                      static_cast<int32_t*>(st.predicted_ids.data()),
                      static_cast<float*>(st.predicted_weights.data())},
                     stream);
  return static_cast<int64_t>(j);
}

}  // namespace stowage::models
