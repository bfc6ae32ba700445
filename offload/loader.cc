#include "offload/loader.h"

#include <fmt/format.h>
#include <re2/re2.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

#include "core/buffer.h"
#include "core/error.h"
#include "kernels/weight_quantizer.h"
#include "offload/host_tier_store.h"
#include "quant/checkpoint_quantizer.h"
#include "quant/quant_rules.h"
#include "quant/quant_state.h"

namespace stowage {

namespace {

// The bitsandbytes state keys hanging off a weight ("<weight>.<suffix>").
const std::vector<std::string>& weight_state_suffixes() {
  static const std::vector<std::string> kSuffixes = {"absmax",
                                                     "quant_map",
                                                     "nested_absmax",
                                                     "nested_quant_map",
                                                     "quant_state.bitsandbytes__nf4",
                                                     "quant_state.bitsandbytes__fp4"};
  return kSuffixes;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool is_weight_name(const std::string& local) {
  return local == "weight" || ends_with(local, ".weight") || ends_with(local, "weight");
}

}  // namespace

std::pair<std::string, std::string> split_module_path(const std::string& tensor_name) {
  std::string base = tensor_name;
  for (const std::string& suffix : weight_state_suffixes()) {
    const std::string tail = "." + suffix;
    if (ends_with(tensor_name, tail) && tensor_name.size() > tail.size()) {
      base = tensor_name.substr(0, tensor_name.size() - tail.size());
      break;
    }
  }
  const size_t dot = base.rfind('.');
  if (dot == std::string::npos) return {"", tensor_name};
  return {tensor_name.substr(0, dot), tensor_name.substr(dot + 1)};
}

TensorPlace classify_tensor(const std::string& local_name,
                            const std::vector<std::string>& module_tensor_names) {
  auto has = [&](const std::string& n) {
    return std::find(module_tensor_names.begin(), module_tensor_names.end(), n) !=
           module_tensor_names.end();
  };
  TensorPlace place;
  // The part `suffix` of `weight`'s quantization state, where the module has
  // that weight.
  auto state_of = [&](const std::string& weight, const std::string& suffix) {
    if (!has(weight)) return false;
    place.role = TensorRole::kQuantState;
    place.weight = weight;
    place.suffix = suffix;
    return true;
  };
  for (const char* key : {"SCB", "weight_format"}) {
    // "SCB" beside "weight", or "<p>.SCB" beside "<p>.weight".
    const std::string tail = std::string(".") + key;
    if (local_name == key && state_of("weight", key)) return place;
    if (ends_with(local_name, tail) && local_name.size() > tail.size() &&
        state_of(local_name.substr(0, local_name.size() - tail.size()) + ".weight", key)) {
      return place;
    }
  }
  for (const std::string& suffix : weight_state_suffixes()) {
    const std::string tail = "." + suffix;
    if (ends_with(local_name, tail) && local_name.size() > tail.size() &&
        state_of(local_name.substr(0, local_name.size() - tail.size()), suffix)) {
      return place;
    }
  }
  if (local_name == "bias" || ends_with(local_name, ".bias")) {
    place.role = TensorRole::kBias;
  } else if (is_weight_name(local_name)) {
    place.role = TensorRole::kWeight;
  }
  return place;
}

std::vector<std::string> natural_module_order(std::vector<std::string> modules) {
  // Split into runs of digits and non-digits; digits compare by value.
  auto less = [](const std::string& a, const std::string& b) {
    size_t i = 0, j = 0;
    while (i < a.size() && j < b.size()) {
      const bool da = std::isdigit(static_cast<unsigned char>(a[i])) != 0;
      const bool db = std::isdigit(static_cast<unsigned char>(b[j])) != 0;
      if (da && db) {
        size_t ie = i, je = j;
        while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
        while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
        std::string na = a.substr(i, ie - i), nb = b.substr(j, je - j);
        na.erase(0, std::min(na.find_first_not_of('0'), na.size()));
        nb.erase(0, std::min(nb.find_first_not_of('0'), nb.size()));
        if (na.size() != nb.size()) return na.size() < nb.size();
        if (na != nb) return na < nb;
        i = ie;
        j = je;
      } else {
        if (a[i] != b[j]) return a[i] < b[j];
        ++i;
        ++j;
      }
    }
    return a.size() - i < b.size() - j;
  };
  std::stable_sort(modules.begin(), modules.end(), less);
  return modules;
}

std::vector<PlanModule> plan_modules(const mmap_store::Checkpoint& checkpoint,
                                     std::vector<std::string>* module_order,
                                     const ModuleSplitter& module_of,
                                     const std::vector<std::string>& read_in_place) {
  const ModuleSplitter split = module_of ? module_of : ModuleSplitter(split_module_path);
  std::map<std::string, PlanModule> by_path;
  std::vector<std::string> first_seen;
  for (const std::string& name : checkpoint.names()) {
    auto [module, local] = split(name);
    auto it = by_path.find(module);
    if (it == by_path.end()) {
      it = by_path.emplace(module, PlanModule{module, {}}).first;
      first_seen.push_back(module);
    }
    it->second.tensors.push_back(PlanTensor{local, checkpoint.info(name).bytes});
  }
  if (module_order->empty()) {
    *module_order = natural_module_order(first_seen);
  } else {
    std::set<std::string> seen;
    for (const std::string& m : *module_order) {
      STOWAGE_EXPECTS(by_path.count(m) != 0, InvalidInputError,
                      "{}: the execution order names module '{}', which the checkpoint lacks",
                      checkpoint.path(), m);
      STOWAGE_EXPECTS(seen.insert(m).second, InvalidInputError,
                      "{}: the execution order lists module '{}' twice", checkpoint.path(), m);
    }
    for (const std::string& m : first_seen) {
      STOWAGE_EXPECTS(seen.count(m) != 0, InvalidInputError,
                      "{}: the execution order misses module '{}' of the checkpoint",
                      checkpoint.path(), m);
    }
  }
  for (const std::string& m : read_in_place) {
    auto it = by_path.find(m);
    STOWAGE_EXPECTS(it != by_path.end(), InvalidInputError,
                    "{}: module '{}' is to be read in place, but the checkpoint has no such module",
                    checkpoint.path(), m);
    it->second.read_in_place = true;
  }
  std::vector<PlanModule> modules;
  modules.reserve(module_order->size());
  for (const std::string& m : *module_order) modules.push_back(by_path.at(m));
  return modules;
}

quant::WeightLayout LoadQuantization::layout(DType dtype, const Shape& shape) const {
  return quant::quantized_layout(method, {method, blocksize, double_quant, storage}, dtype, shape,
                                 /*int8_from_source=*/!on_host);
}

uint64_t quantized_bytes(const mmap_store::TensorInfo& info, const LoadQuantization& q) {
  return q.layout(info.dtype, info.shape).total_bytes();
}

bool selected_for_quantization(const mmap_store::TensorInfo& info, const LoadQuantization& q) {
  if (q.select) return q.select(info);
  return quant::selected_by_default(info.name, info.dtype, info.shape);
}

namespace {

// `t` itself when the host can read it (host memory, a disk mapping); else a
// pageable host copy, made on the accelerator's copy stream.
Tensor host_readable(const Tensor& t, OffloadManager& manager) {
  if (!t.tier().is_accelerator()) return t;
  Tensor out = Tensor::empty(manager.platform().pageable_host_memory(), t.dtype(), t.shape());
  StreamRef stream = manager.copy_stream(t.tier());
  stream.copy(out.data(), t.data(), t.bytes());
  stream.synchronize();
  return out;
}

}  // namespace

std::vector<size_t> apply_tensor_overrides(std::vector<PlanModule>& modules,
                                           const std::vector<TensorOverride>& overrides) {
  std::vector<size_t> placed(overrides.size(), 0);
  if (overrides.empty()) return placed;
  std::vector<std::unique_ptr<re2::RE2>> patterns;
  re2::RE2::Options quiet;
  quiet.set_log_errors(false);
  for (const TensorOverride& o : overrides) {
    patterns.push_back(std::make_unique<re2::RE2>(o.pattern, quiet));
    STOWAGE_EXPECTS(patterns.back()->ok(), InvalidInputError,
                    "tensor override '{}' is not a valid regex: {}", o.pattern,
                    patterns.back()->error());
  }
  for (PlanModule& m : modules) {
    std::vector<std::string> locals;
    for (const PlanTensor& t : m.tensors) locals.push_back(t.name);
    std::map<std::string, size_t> weight_override;  // local weight name -> override
    std::vector<std::optional<size_t>> chosen(m.tensors.size());
    for (size_t t = 0; t < m.tensors.size(); ++t) {
      const std::string full = m.path.empty() ? locals[t] : m.path + "." + locals[t];
      for (size_t o = 0; o < overrides.size(); ++o) {
        if (re2::RE2::FullMatch(full, *patterns[o])) {
          chosen[t] = o;
          break;
        }
      }
    }
    // A quant-state part takes its weight's override (or none).
    for (size_t t = 0; t < m.tensors.size(); ++t) {
      const TensorPlace place = classify_tensor(locals[t], locals);
      if (place.role != TensorRole::kQuantState) continue;
      chosen[t].reset();
      for (size_t w = 0; w < m.tensors.size(); ++w) {
        if (locals[w] == place.weight) chosen[t] = chosen[w];
      }
    }
    for (size_t t = 0; t < m.tensors.size(); ++t) {
      if (!chosen[t]) continue;
      m.tensors[t].tier = overrides[*chosen[t]].tier;
      ++placed[*chosen[t]];
    }
  }
  std::string example;
  for (const PlanModule& m : modules) {
    if (example.empty() && !m.tensors.empty()) {
      example = m.path.empty() ? m.tensors.front().name : m.path + "." + m.tensors.front().name;
    }
  }
  for (size_t o = 0; o < overrides.size(); ++o) {
    STOWAGE_EXPECTS(placed[o] > 0, InvalidInputError,
                    "tensor override '{}' matches no tensor{} (the pattern must match a whole "
                    "tensor name, e.g. '{}')",
                    overrides[o].pattern, o > 0 ? " that an earlier override did not place" : "",
                    example);
  }
  return placed;
}

LoadedCheckpoint load_checkpoint(const mmap_store::Checkpoint& checkpoint, OffloadManager& manager,
                                 const LoadOptions& options) {
  LoadedCheckpoint loaded;
  loaded.module_order = options.module_order;
  const ModuleSplitter split =
      options.module_of ? options.module_of : ModuleSplitter(split_module_path);
  loaded.request.modules =
      plan_modules(checkpoint, &loaded.module_order, split, options.read_in_place);
  if (options.quantize) {
    for (PlanModule& m : loaded.request.modules) {
      for (PlanTensor& t : m.tensors) {
        const std::string full = m.path.empty() ? t.name : m.path + "." + t.name;
        const auto& info = checkpoint.info(full);
        if (selected_for_quantization(info, *options.quantize)) {
          t.bytes = quantized_bytes(info, *options.quantize);
        }
      }
    }
  }
  static_cast<MemoryBudget&>(loaded.request) = options;
  loaded.request.no_split = options.no_split;
  loaded.request.spread_resident = options.spread_resident;
  apply_tensor_overrides(loaded.request.modules, options.tensor_overrides);
  // Plan before touching any byte: a budget that cannot fit fails here.
  loaded.plan = plan_device_map(loaded.request);

  std::unordered_map<std::string, std::vector<std::string>> names_of;  // module -> full names
  for (const std::string& name : checkpoint.names()) {
    names_of[split(name).first].push_back(name);
  }
  LoadProgress progress;
  progress.tensors_total = checkpoint.names().size();
  progress.bytes_total = checkpoint.total_bytes();

  // A shared home for the host tier: its records either come from the store
  // (no read of the checkpoint) or are kept there as they are placed.
  std::unique_ptr<HostTierLoad> host_load;
  if (options.host_store != nullptr) {
    std::vector<PlanModule> host_modules;
    for (const PlanModule& m : loaded.request.modules) {
      // A module on several tiers (tensor overrides) keeps its bytes in the manager.
      if (loaded.plan.tier_of(m.path) == Tier::pinned_host() && !loaded.plan.on_several_tiers(m.path)) {
        host_modules.push_back(m);
      }
    }
    host_load = options.host_store->begin_load(checkpoint, options, host_modules);
  }

  quant::WeightQuantizer quantizer;  // LoadQuantization::on_host chooses
  if (options.quantize) {
    const Tier acc = manager.platform().accelerator(manager.options().compute_accelerator).tier();
    quantizer = options.quantize->on_host ? quant::cpu_weight_quantizer()
                                          : kernels::accelerator_weight_quantizer(
                                                manager.memory(acc), manager.copy_stream(acc),
                                                /*parts_on_host=*/false);
  }
  for (const std::string& module : loaded.module_order) {
    const Tier module_tier = loaded.plan.tier_of(module);
    const std::vector<std::string>& full_names = names_of.at(module);
    if (host_load && module_tier != Tier::disk() && host_load->holds(module)) {
      const Tier tier = module_tier;
      std::map<std::string, RecordId> stored_ids;  // local name -> record
      for (const StoredRecord& r : host_load->records(module)) {
        if (r.info.role == TensorRole::kQuantState) {
          manager.place_quant_part(stored_ids.at(r.info.weight), r.info.suffix, r.tensor,
                                   r.info.name);
        } else {
          stored_ids[r.info.name] = manager.place(options.module_prefix + module, r.info.name,
                                                  r.info.role, r.tensor, tier);
        }
        loaded.bytes += r.tensor.bytes();
      }
      for (const std::string& full : full_names) {
        progress.tensors_done++;
        progress.bytes_done += checkpoint.info(full).bytes;
        progress.tensor = full;
        loaded.tensors++;
        if (options.progress) options.progress(progress);
      }
      continue;
    }
    // The tensor the manager is given for record `info`: kept in the shared
    // store when the module lives on the host tier.
    const bool keep_in_store = host_load && module_tier == Tier::pinned_host() &&
                               !loaded.plan.on_several_tiers(module);
    auto home_of = [&](const StoredRecordInfo& info, const Tensor& t) {
      return keep_in_store ? host_load->keep(info, host_readable(t, manager)) : t;
    };
    std::vector<std::string> locals;
    for (const std::string& n : full_names) locals.push_back(split(n).second);
    // Weights first, so that their quant-state parts can link to them.
    std::vector<size_t> order(full_names.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::vector<TensorPlace> places;
    for (const std::string& local : locals) places.push_back(classify_tensor(local, locals));
    std::stable_partition(order.begin(), order.end(),
                          [&](size_t i) { return places[i].role != TensorRole::kQuantState; });
    std::map<std::string, RecordId> weight_ids;
    for (size_t i : order) {
      const std::string& full = full_names[i];
      const TensorPlace& place = places[i];
      // Its own tier when an override placed it apart (planner.h step 6).
      const Tier tier = loaded.plan.tier_of_tensor(module, locals[i]);
      RecordId id = 0;
      {
        // The source is the file's memory map: no staging copy outlives this
        // scope (seed lesson 4).
        Tensor source = checkpoint.tensor(full);
        if (options.quantize && place.role != TensorRole::kQuantState &&
            selected_for_quantization(checkpoint.info(full), *options.quantize)) {
          const quant::QuantizedWeight qw =
              quantizer(source, options.quantize->layout(source.dtype(), source.shape()),
                        manager.platform().pageable_host_memory(), full);
          const std::string prefix = locals[i].substr(0, locals[i].size() - 6);  // "...weight"
          RecordId weight_id = 0;
          for (const quant::QuantPart& part : quant::parts(qw)) {
            const std::string local = prefix + part.suffix;
            if (part.suffix == "weight") {
              weight_id = manager.place(
                  options.module_prefix + module, local, TensorRole::kWeight,
                  home_of({module, local, TensorRole::kWeight, "", ""}, part.tensor), tier);
              weight_ids[local] = weight_id;
              id = weight_id;
            } else {
              const std::string part_name =
                  part.suffix.rfind("weight.", 0) == 0 ? part.suffix.substr(7) : part.suffix;
              const std::string weight_local = prefix + "weight";
              manager.place_quant_part(
                  weight_id, part_name,
                  home_of({module, local, TensorRole::kQuantState, weight_local, part_name},
                          part.tensor),
                  local);
            }
          }
        } else if (place.role == TensorRole::kQuantState) {
          id = manager.place_quant_part(
              weight_ids.at(place.weight), place.suffix,
              home_of({module, locals[i], TensorRole::kQuantState, place.weight, place.suffix},
                      source),
              locals[i]);
        } else {
          id = manager.place(options.module_prefix + module, locals[i], place.role,
                             home_of({module, locals[i], place.role, "", ""}, source), tier);
          weight_ids[locals[i]] = id;
        }
        // The copies above read the file's mapping: a file shrunk under it
        // gave zeros, never bytes to keep.
        mmap_store::check_mapped_read(source, full);
      }
      progress.tensors_done++;
      progress.bytes_done += checkpoint.info(full).bytes;
      progress.tensor = full;
      loaded.tensors++;
      {
        TensorRecord rec = manager.table().get(id);
        loaded.bytes += rec.bytes;
        for (RecordId part : rec.quant_parts) {
          // Parts placed with a quantized weight count here; parts read from
          // the checkpoint count when their own turn comes.
          if (rec.role == TensorRole::kWeight && options.quantize &&
              selected_for_quantization(checkpoint.info(full), *options.quantize)) {
            loaded.bytes += manager.table().get(part).bytes;
          }
        }
      }
      if (options.progress) options.progress(progress);
    }
  }
  if (host_load) host_load->commit();
  // A module read in place off the accelerators runs where its bytes are: the
  // manager sizes no fetch slot for it and never prefetches it.
  for (const std::string& m : options.read_in_place) {
    if (loaded.plan.streamed(m) && !loaded.plan.on_several_tiers(m)) {
      manager.set_host_compute(options.module_prefix + m, true);
    }
  }
  return loaded;
}

}  // namespace stowage
