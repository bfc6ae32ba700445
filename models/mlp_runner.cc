#include "models/mlp_runner.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace stowage::models {

MlpSpec describe_checkpoint(const mmap_store::Checkpoint& checkpoint) {
  check_quantized_weights(checkpoint);
  std::vector<TensorMeta> metas;
  for (const std::string& name : checkpoint.names()) {
    const auto& info = checkpoint.info(name);
    metas.push_back(TensorMeta{name, info.dtype, info.shape});
  }
  auto read_bytes = [&checkpoint](const std::string& name) {
    Tensor t = checkpoint.tensor(name);
    const auto* p = static_cast<const uint8_t*>(t.data());
    return std::vector<uint8_t>(p, p + t.bytes());
  };
  return describe_mlp(metas, read_bytes, checkpoint.path());
}

MlpSpec describe_loaded(OffloadManager& manager, const std::string& prefix,
                        const std::vector<std::string>& modules) {
  std::vector<TensorMeta> metas;
  for (const std::string& module : modules) {
    for (RecordId id : manager.table().records_of(prefix + module)) {
      TensorRecord rec = manager.table().get(id);
      metas.push_back(TensorMeta{module + "." + rec.name, rec.dtype, rec.shape});
    }
  }
  auto read_bytes = [&](const std::string& name) {
    auto [module, local] = split_module_path(name);
    Tensor t = manager.read_to_host(prefix + module, local);
    const auto* p = static_cast<const uint8_t*>(t.data());
    return std::vector<uint8_t>(p, p + t.bytes());
  };
  return describe_mlp(metas, read_bytes, "the loaded model");
}

namespace {
Accelerator& compute_accelerator(OffloadManager& manager) {
  Platform& platform = manager.platform();
  const int acc = manager.options().compute_accelerator;
  STOWAGE_EXPECTS(acc >= 0 && acc < platform.accelerator_count(), InvalidInputError,
                  "compute accelerator {} does not exist ({} accelerator(s))", acc,
                  platform.accelerator_count());
  return platform.accelerator(acc);
}
}  // namespace

MlpRunner::MlpRunner(OffloadManager& manager, const mmap_store::Checkpoint& checkpoint,
                     LinearKernels& kernels, LoadOptions load)
    : manager_(manager),
      accelerator_(compute_accelerator(manager).tier()),
      stream_(compute_accelerator(manager).create_stream()) {
  MlpSpec spec = describe_checkpoint(checkpoint);
  // The layers run one after another on the compute accelerator: only it
  // holds them (a layer placed on another accelerator would run there, on
  // that device's streams, with x on this one). What does not fit there goes
  // to pinned host memory or disk and is streamed.
  for (const TierCapacity& c : load.accelerators) {
    STOWAGE_EXPECTS(c.tier == accelerator_ || !c.budget, InvalidInputError,
                    "a memory budget names {}, but the MLP runner computes on {} alone",
                    c.tier.to_string(), accelerator_.to_string());
  }
  load.accelerators.erase(std::remove_if(load.accelerators.begin(), load.accelerators.end(),
                                         [&](const TierCapacity& c) {
                                           return c.tier != accelerator_;
                                         }),
                          load.accelerators.end());
  load.module_order.clear();
  for (const MlpLayer& layer : spec.layers) load.module_order.push_back(layer.module);
  loaded_ = load_checkpoint(checkpoint, manager, load);
  // Quantized while loading: the layers' layout is what the table now holds.
  if (load.quantize) spec = describe_loaded(manager, load.module_prefix, load.module_order);
  model_ = std::make_unique<MlpModel>(std::move(spec), kernels);
  hook_ =
      hooks::OffloadHook::attach_to_tree(manager, registry_, model_->root(), load.module_prefix);
  hook_->declare_execution_order(model_->execution_order());
}

MlpRunner::~MlpRunner() {
  if (stream_.valid()) stream_.synchronize();
}

Tensor MlpRunner::forward(const Tensor& x) {
  const MlpSpec& spec = model_->spec();
  STOWAGE_EXPECTS(x.defined() && x.dtype() == DType::kF32 && x.shape().rank() == 2 &&
                      x.shape()[1] == spec.in_features(),
                  InvalidInputError, "input 'x': expected float32 [batch, {}], found {} {}",
                  spec.in_features(), x.defined() ? short_name(x.dtype()) : "nothing",
                  x.defined() ? x.shape().to_string() : "");
  const int64_t batch = x.shape()[0];
  MemoryResource& device = manager_.memory(accelerator_);
  StreamRef s = stream_.ref();
  Tensor y_host = Tensor::empty(manager_.platform().pageable_host_memory(), DType::kF32,
                                Shape{batch, spec.out_features()});
  {
    Tensor x_dev = Tensor::empty(device, DType::kF32, x.shape(), s);
    Tensor y_dev = Tensor::empty(device, DType::kF32, y_host.shape(), s);
    try {
      s.copy(x_dev.data(), x.data(), x.bytes());
      model_->forward(registry_, s, x_dev.view(), y_dev.view(), device);
      s.copy(y_host.data(), y_dev.data(), y_host.bytes());
    } catch (...) {
      // Work already enqueued reads x and writes y_host: let it finish before
      // the caller's tensors can go away.
      try {
        s.synchronize();
      } catch (...) {
      }
      throw;
    }
    s.synchronize();
  }
  return y_host;
}

}  // namespace stowage::models
