#include "core/detail/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <exception>
#include <mutex>
#include <type_traits>
#include <utility>

#include "core/cuda_check.h"
#include "core/detail/backend.h"
#include "core/error.h"

namespace stowage::detail {
namespace {

// Restores the calling thread's current device on scope exit.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) {
    STOWAGE_CUDA_TRY(cudaGetDevice(&previous_));
    if (previous_ != device) STOWAGE_CUDA_TRY(cudaSetDevice(device));
  }
  ~ScopedDevice() { cudaSetDevice(previous_); }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

 private:
  int previous_ = 0;
};

class CudaEvent final : public EventImpl {
 public:
  explicit CudaEvent(int device) {
    ScopedDevice scope(device);
    STOWAGE_CUDA_TRY(cudaEventCreate(&event_));
  }
  ~CudaEvent() override { cudaEventDestroy(event_); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  Backend backend() const override { return Backend::kCuda; }
  bool ready() const override {
    const cudaError_t status = cudaEventQuery(event_);
    if (status == cudaErrorNotReady) {
      cudaGetLastError();
      return false;
    }
    STOWAGE_CUDA_TRY(status);
    return true;
  }
  void synchronize() const override { STOWAGE_CUDA_TRY(cudaEventSynchronize(event_)); }
  float elapsed_ms_since(const EventImpl& start) const override {
    float ms = 0;
    STOWAGE_CUDA_TRY(
        cudaEventElapsedTime(&ms, static_cast<const CudaEvent&>(start).event_, event_));
    return ms;
  }
  cudaEvent_t handle() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

class CudaStream final : public StreamImpl {
 public:
  explicit CudaStream(int device) : device_(device) {
    ScopedDevice scope(device);
    STOWAGE_CUDA_TRY(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaStream() override {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  Backend backend() const override { return Backend::kCuda; }
  int device_index() const override { return device_; }
  void* native_handle() const override { return stream_; }

  void copy(void* dst, const void* src, size_t bytes) override {
    STOWAGE_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
  }
  void fill_zero(void* dst, size_t bytes) override {
    cudaPointerAttributes attributes{};
    STOWAGE_CUDA_TRY(cudaPointerGetAttributes(&attributes, dst));
    if (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged) {
      STOWAGE_CUDA_TRY(cudaMemsetAsync(dst, 0, bytes, stream_));
    } else {
      host_task([dst, bytes] { std::memset(dst, 0, bytes); });
    }
  }
  void host_task(std::function<void()> task) override {
    // A captured host node would call the trampoline at every launch, which
    // deletes its payload after the first.
    STOWAGE_EXPECTS(!capturing(), DeviceError,
                    "host work (a host task) cannot be part of a CUDA graph capture");
    auto* payload = new Payload{this, std::move(task)};
    const cudaError_t status = cudaLaunchHostFunc(stream_, &CudaStream::trampoline, payload);
    if (status != cudaSuccess) delete payload;
    STOWAGE_CUDA_TRY(status);
  }
  void record(EventImpl& event) override {
    STOWAGE_CUDA_TRY(cudaEventRecord(require_cuda(event), stream_));
  }
  void wait(const EventImpl& event) override {
    STOWAGE_CUDA_TRY(cudaStreamWaitEvent(stream_, require_cuda(event), 0));
  }
  void synchronize() override {
    STOWAGE_CUDA_TRY(cudaStreamSynchronize(stream_));
    std::exception_ptr error;
    {
      std::lock_guard<std::mutex> lock(error_mutex_);
      error = std::exchange(error_, nullptr);
    }
    if (error) std::rethrow_exception(error);
  }
  bool capturing() const override {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    STOWAGE_CUDA_TRY(cudaStreamIsCapturing(stream_, &status));
    return status != cudaStreamCaptureStatusNone;
  }
  void begin_capture() override {
    // Thread-local: only this thread's unsafe calls (cudaMalloc, a legacy
    // stream synchronize) break the capture, not other threads' work.
    STOWAGE_CUDA_TRY(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  }
  std::unique_ptr<GraphImpl> end_capture() override;

 private:
  struct Payload {
    CudaStream* stream;
    std::function<void()> task;
  };
  static void CUDART_CB trampoline(void* data) {
    std::unique_ptr<Payload> payload(static_cast<Payload*>(data));
    try {
      payload->task();
    } catch (...) {
      std::lock_guard<std::mutex> lock(payload->stream->error_mutex_);
      if (!payload->stream->error_) payload->stream->error_ = std::current_exception();
    }
  }
  static cudaEvent_t require_cuda(const EventImpl& event) {
    if (event.backend() != Backend::kCuda) {
      throw InvalidInputError("a CUDA stream was given an event of another backend");
    }
    return static_cast<const CudaEvent&>(event).handle();
  }

  int device_;
  cudaStream_t stream_ = nullptr;
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

// An instantiated CUDA graph.
class CudaGraph final : public GraphImpl {
 public:
  CudaGraph(cudaGraph_t graph, int device) : graph_(graph), device_(device) {
    const cudaError_t status = cudaGraphInstantiate(&exec_, graph_, 0);
    if (status != cudaSuccess) {
      cudaGetLastError();
      cudaGraphDestroy(graph_);
      throw DeviceError(
          fmt::format("instantiating a captured CUDA graph failed: {}", cudaGetErrorString(status)));
    }
  }
  ~CudaGraph() override {
    cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
  }
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  void launch(StreamImpl& stream) override {
    STOWAGE_EXPECTS(stream.backend() == Backend::kCuda && stream.device_index() == device_,
                    InvalidInputError, "a CUDA graph of device {} was launched on another stream",
                    device_);
    STOWAGE_CUDA_TRY(cudaGraphLaunch(exec_, static_cast<cudaStream_t>(stream.native_handle())));
  }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  int device_;
};

std::unique_ptr<GraphImpl> CudaStream::end_capture() {
  cudaGraph_t graph = nullptr;
  const cudaError_t status = cudaStreamEndCapture(stream_, &graph);
  if (status != cudaSuccess || graph == nullptr) {
    cudaGetLastError();
    if (graph != nullptr) cudaGraphDestroy(graph);
    throw DeviceError(fmt::format("CUDA graph capture failed: {}", cudaGetErrorString(status)));
  }
  return std::make_unique<CudaGraph>(graph, device_);
}

// Device memory through the stream-ordered allocator (cudaMallocAsync), so a
// free on a stream is safe while kernels still read the memory.
class CudaDeviceMemory final : public MemoryResource {
 public:
  explicit CudaDeviceMemory(int device) : device_(device) {}
  Tier tier() const override { return Tier::accelerator(Backend::kCuda, device_); }
  std::string name() const override { return tier().to_string() + " memory"; }

 private:
  void* do_allocate(size_t bytes, StreamRef stream) override {
    if (bytes == 0) return nullptr;
    STOWAGE_EXPECTS(!stream.capturing(), InvalidInputError,
                    "{}: a stream-ordered allocation of {} bytes during a graph capture (the "
                    "graph would hold memory outside every budget)",
                    name(), bytes);
    ScopedDevice scope(device_);
    void* ptr = nullptr;
    const cudaError_t status =
        cudaMallocAsync(&ptr, bytes, static_cast<cudaStream_t>(stream.native_handle()));
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      throw OutOfMemoryError(fmt::format("{}: out of memory allocating {} bytes ({} free of {})",
                                         name(), bytes, free_bytes, total_bytes));
    }
    STOWAGE_CUDA_TRY(status);
    // With no stream the memory must be usable on every stream at once (a
    // slot grown mid-run is written by the copy stream): the pool may have
    // made the legacy stream wait on the free of reused memory still read
    // on another stream, so wait for the legacy stream here.
    if (stream.is_null()) STOWAGE_CUDA_TRY(cudaStreamSynchronize(nullptr));
    return ptr;
  }
  void do_deallocate(void* ptr, size_t, StreamRef stream) override {
    ScopedDevice scope(device_);
    STOWAGE_CUDA_TRY(cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream.native_handle())));
    if (stream.is_null()) STOWAGE_CUDA_TRY(cudaStreamSynchronize(nullptr));
  }
  int device_;
};

class CudaPinnedHostMemory final : public MemoryResource {
 public:
  Tier tier() const override { return Tier::pinned_host(); }
  std::string name() const override { return "pinned host memory"; }

 private:
  void* do_allocate(size_t bytes, StreamRef) override {
    if (bytes == 0) return nullptr;
    void* ptr = nullptr;
    const cudaError_t status = cudaHostAlloc(&ptr, bytes, cudaHostAllocPortable);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw OutOfMemoryError(
          fmt::format("pinned host memory: out of memory allocating {} bytes", bytes));
    }
    STOWAGE_CUDA_TRY(status);
    return ptr;
  }
  void do_deallocate(void* ptr, size_t, StreamRef stream) override {
    // cudaFreeHost synchronizes the device; pinned buffers are long-lived, so
    // this stays off the hot path. A stream-ordered free waits for the stream.
    if (!stream.is_null()) stream.synchronize();
    STOWAGE_CUDA_TRY(cudaFreeHost(ptr));
  }
};

class CudaAccelerator final : public Accelerator {
 public:
  explicit CudaAccelerator(int device) : device_(device), memory_(device) {
    cudaDeviceProp properties{};
    STOWAGE_CUDA_TRY(cudaGetDeviceProperties(&properties, device));
    name_ = properties.name;
    total_ = properties.totalGlobalMem;
    grant_peer_access();
  }
  Tier tier() const override { return Tier::accelerator(Backend::kCuda, device_); }
  std::string description() const override {
    return fmt::format("{} ({})", name_, tier().to_string());
  }
  MemoryResource& memory() override { return memory_; }
  Stream create_stream() override { return Stream(std::make_unique<CudaStream>(device_)); }
  Event create_event() override { return Event(std::make_unique<CudaEvent>(device_)); }
  uint64_t total_bytes() const override { return total_; }
  uint64_t free_bytes() const override {
    ScopedDevice scope(device_);
    size_t free_bytes = 0, total_bytes = 0;
    STOWAGE_CUDA_TRY(cudaMemGetInfo(&free_bytes, &total_bytes));
    return free_bytes;
  }
  void make_current() override { STOWAGE_CUDA_TRY(cudaSetDevice(device_)); }
  DevicePoolUsage pool_usage() const override {
    ScopedDevice scope(device_);
    const cudaMemPool_t pool = current_pool();
    DevicePoolUsage usage;
    usage.reserved_bytes = pool_attribute(pool, cudaMemPoolAttrReservedMemCurrent);
    usage.used_bytes = pool_attribute(pool, cudaMemPoolAttrUsedMemCurrent);
    usage.reserved_high_bytes = pool_attribute(pool, cudaMemPoolAttrReservedMemHigh);
    usage.used_high_bytes = pool_attribute(pool, cudaMemPoolAttrUsedMemHigh);
    return usage;
  }
  void reset_pool_high_watermarks() override {
    ScopedDevice scope(device_);
    const cudaMemPool_t pool = current_pool();
    uint64_t zero = 0;  // setting a high watermark to 0 resets it to the current value
    STOWAGE_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero));
    STOWAGE_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));
  }
  void release_cached_memory() override {
    ScopedDevice scope(device_);
    // Frees are stream-ordered: they reach the pool once their streams ran.
    STOWAGE_CUDA_TRY(cudaDeviceSynchronize());
    STOWAGE_CUDA_TRY(cudaMemPoolTrimTo(current_pool(), 0));
  }

 private:
  // The pool cudaMallocAsync takes from on this device. REQUIRES: the device
  // is current.
  cudaMemPool_t current_pool() const {
    cudaMemPool_t pool = nullptr;
    STOWAGE_CUDA_TRY(cudaDeviceGetMemPool(&pool, device_));
    return pool;
  }
  static uint64_t pool_attribute(cudaMemPool_t pool, cudaMemPoolAttr attribute) {
    uint64_t value = 0;  // the four byte attributes are cuuint64_t
    STOWAGE_CUDA_TRY(cudaMemPoolGetAttribute(pool, attribute, &value));
    return value;
  }

  int device_;
  // Memory from a device's stream-ordered pool is accessible from that
  // device alone until the pool grants access (peer access enabled with
  // cudaDeviceEnablePeerAccess does not cover pools): without this, a copy
  // between two accelerators (a module moved from cuda:1 to cuda:0, or
  // fetched from one to run on the other) fails with cudaErrorInvalidValue.
  // Grants every device that can reach this one read and write access.
  void grant_peer_access() {
    int count = 0;
    STOWAGE_CUDA_TRY(cudaGetDeviceCount(&count));
    ScopedDevice scope(device_);
    const cudaMemPool_t pool = current_pool();
    for (int peer = 0; peer < count; ++peer) {
      if (peer == device_) continue;
      int can_access = 0;
      STOWAGE_CUDA_TRY(cudaDeviceCanAccessPeer(&can_access, peer, device_));
      if (can_access == 0) continue;
      cudaMemAccessDesc access{};
      access.location.type = cudaMemLocationTypeDevice;
      access.location.id = peer;
      access.flags = cudaMemAccessFlagsProtReadWrite;
      STOWAGE_CUDA_TRY(cudaMemPoolSetAccess(pool, &access, 1));
    }
  }

  CudaDeviceMemory memory_;
  std::string name_;
  uint64_t total_ = 0;
};

}  // namespace

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

std::unique_ptr<Accelerator> make_cuda_accelerator(int index) {
  return std::make_unique<CudaAccelerator>(index);
}

std::unique_ptr<MemoryResource> make_cuda_pinned_host_memory() {
  return std::make_unique<CudaPinnedHostMemory>();
}

HostRegistration cuda_host_register(const void* data, size_t bytes, bool read_only) {
  if (bytes == 0) return HostRegistration(data, 0, {});
  unsigned int flags = cudaHostRegisterPortable;
  if (read_only) flags |= cudaHostRegisterReadOnly;
  void* ptr = const_cast<void*>(data);
  const cudaError_t status = cudaHostRegister(ptr, bytes, flags);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError(fmt::format("cudaHostRegister of {} bytes of {}host memory at {} failed: {}: {}",
                                  bytes, read_only ? "read-only " : "", data,
                                  cudaGetErrorName(status), cudaGetErrorString(status)));
  }
  return HostRegistration(data, bytes, [ptr] { cudaHostUnregister(ptr); });
}

}  // namespace stowage::detail
