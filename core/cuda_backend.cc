#include "core/detail/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>

#include "core/cuda_check.h"
#include "core/detail/backend.h"
#include "core/device_status.h"
#include "core/error.h"
#include "core/huge_page_memory.h"

namespace stowage::detail {
namespace {

// Restores the calling thread's current device on scope exit.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) {
    STOWAGE_CUDA_TRY_FOR(cudaGetDevice(&previous_), "cuda:{}: asking for the current device",
                         device);
    if (previous_ != device) {
      STOWAGE_CUDA_TRY_FOR(cudaSetDevice(device), "cuda:{}: making it the current device", device);
    }
  }
  ~ScopedDevice() { cudaSetDevice(previous_); }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

 private:
  int previous_ = 0;
};

// How host threads wait for one device's events and streams
// (Accelerator::set_host_wait). Spinning, the default, is
// cudaEventSynchronize / cudaStreamSynchronize as they are. Sleeping: a
// private stream of the device waits for the event (or an event recorded on
// the stream), and the thread waits, in the driver, for a
// cudaEventBlockingSync event recorded after it. Its stream and event are
// made on the first sleeping wait; sleeping waits take turns.
class HostWaiter {
 public:
  explicit HostWaiter(int device) : device_(device) {}
  ~HostWaiter() {
    if (blocking_ != nullptr) cudaEventDestroy(blocking_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  HostWaiter(const HostWaiter&) = delete;
  HostWaiter& operator=(const HostWaiter&) = delete;

  bool sleeping() const { return sleeping_.load(std::memory_order_relaxed); }
  void set_sleeping(bool on) { sleeping_.store(on, std::memory_order_relaxed); }

  // Sleeps until `event`'s last record has happened (at once if never recorded).
  void sleep_until(cudaEvent_t event) {
    std::lock_guard<std::mutex> lock(mutex_);
    make();
    STOWAGE_CUDA_TRY_FOR(cudaStreamWaitEvent(stream_, event, 0),
                         "cuda:{}: making the waiting stream wait for an event", device_);
    STOWAGE_CUDA_TRY_FOR(cudaEventRecord(blocking_, stream_),
                         "cuda:{}: recording the blocking-sync event", device_);
    STOWAGE_CUDA_TRY_FOR(cudaEventSynchronize(blocking_), "cuda:{}: waiting (sleeping)",
                         device_);
  }
  // Sleeps until all the work enqueued on `stream` so far has run.
  void sleep_until_done(cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    make();
    STOWAGE_CUDA_TRY_FOR(cudaEventRecord(blocking_, stream),
                         "cuda:{}: recording the blocking-sync event on a stream", device_);
    STOWAGE_CUDA_TRY_FOR(cudaEventSynchronize(blocking_),
                         "cuda:{}: waiting for a stream (sleeping)", device_);
  }

 private:
  void make() {  // REQUIRES: mutex_ held
    if (blocking_ != nullptr) return;
    ScopedDevice scope(device_);
    STOWAGE_CUDA_TRY_FOR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                         "cuda:{}: creating the waiting stream", device_);
    STOWAGE_CUDA_TRY_FOR(
        cudaEventCreateWithFlags(&blocking_, cudaEventBlockingSync | cudaEventDisableTiming),
        "cuda:{}: creating a blocking-sync event", device_);
  }

  int device_;
  std::atomic<bool> sleeping_{false};
  std::mutex mutex_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t blocking_ = nullptr;
};

class CudaEvent final : public EventImpl {
 public:
  CudaEvent(int device, std::shared_ptr<HostWaiter> waiter)
      : device_(device), waiter_(std::move(waiter)) {
    ScopedDevice scope(device);
    STOWAGE_CUDA_TRY_FOR(cudaEventCreate(&event_), "cuda:{}: creating an event", device_);
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
    check_status(status, DeviceCallSite{"cudaEventQuery(event_)", __FILE__, __LINE__}, [&] {
      return fmt::format("cuda:{}: asking whether an event has happened", device_);
    });
    return true;
  }
  void synchronize() const override {
    if (waiter_->sleeping()) {
      waiter_->sleep_until(event_);
      return;
    }
    STOWAGE_CUDA_TRY_FOR(cudaEventSynchronize(event_), "cuda:{}: waiting for an event", device_);
  }
  float elapsed_ms_since(const EventImpl& start) const override {
    float ms = 0;
    STOWAGE_CUDA_TRY_FOR(
        cudaEventElapsedTime(&ms, static_cast<const CudaEvent&>(start).event_, event_),
        "cuda:{}: timing between two events", device_);
    return ms;
  }
  cudaEvent_t handle() const { return event_; }

 private:
  int device_;
  std::shared_ptr<HostWaiter> waiter_;
  cudaEvent_t event_ = nullptr;
};

class CudaStream final : public StreamImpl {
 public:
  CudaStream(int device, std::shared_ptr<HostWaiter> waiter)
      : device_(device), waiter_(std::move(waiter)) {
    ScopedDevice scope(device);
    STOWAGE_CUDA_TRY_FOR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                         "cuda:{}: creating a stream", device_);
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
    STOWAGE_CUDA_TRY_FOR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_),
                         "cuda:{}: copying {} bytes from {} to {} on a stream", device_, bytes, src,
                         dst);
  }
  void fill_zero(void* dst, size_t bytes) override {
    cudaPointerAttributes attributes{};
    STOWAGE_CUDA_TRY_FOR(cudaPointerGetAttributes(&attributes, dst),
                         "cuda:{}: asking where the {} bytes to zero at {} live", device_, bytes,
                         dst);
    if (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged) {
      STOWAGE_CUDA_TRY_FOR(cudaMemsetAsync(dst, 0, bytes, stream_),
                           "cuda:{}: zeroing {} bytes at {} on a stream", device_, bytes, dst);
    } else {
      host_task([dst, bytes] { std::memset(dst, 0, bytes); });
    }
  }
  void host_task(std::function<void()> task) override {
    // A captured host node would call the trampoline at every launch, which
    // deletes its payload after the first.
    STOWAGE_EXPECTS(!capturing(), DeviceError,
                    "host work (a host task) cannot be part of a CUDA graph capture");
    // The trampoline owns the payload once the launch is queued.
    auto payload = std::make_unique<Payload>(Payload{this, std::move(task)});
    STOWAGE_CUDA_TRY_FOR(cudaLaunchHostFunc(stream_, &CudaStream::trampoline, payload.get()),
                         "cuda:{}: queuing a host task on a stream", device_);
    payload.release();
  }
  void record(EventImpl& event) override {
    STOWAGE_CUDA_TRY_FOR(cudaEventRecord(require_cuda(event), stream_),
                         "cuda:{}: recording an event on a stream", device_);
  }
  void wait(const EventImpl& event) override {
    STOWAGE_CUDA_TRY_FOR(cudaStreamWaitEvent(stream_, require_cuda(event), 0),
                         "cuda:{}: making a stream wait for an event", device_);
  }
  void synchronize() override {
    if (waiter_->sleeping()) {
      waiter_->sleep_until_done(stream_);
    } else {
      STOWAGE_CUDA_TRY_FOR(cudaStreamSynchronize(stream_), "cuda:{}: waiting for a stream",
                           device_);
    }
    rethrow_task_error();
  }
  void rethrow_task_error() {
    std::exception_ptr error;
    {
      std::lock_guard<std::mutex> lock(error_mutex_);
      error = std::exchange(error_, nullptr);
    }
    if (error) std::rethrow_exception(error);
  }
  bool capturing() const override {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    STOWAGE_CUDA_TRY_FOR(cudaStreamIsCapturing(stream_, &status),
                         "cuda:{}: asking whether a stream is capturing", device_);
    return status != cudaStreamCaptureStatusNone;
  }
  void begin_capture() override {
    // Thread-local: only this thread's unsafe calls (cudaMalloc, a legacy
    // stream synchronize) break the capture, not other threads' work.
    STOWAGE_CUDA_TRY_FOR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                         "cuda:{}: beginning a graph capture", device_);
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
  std::shared_ptr<HostWaiter> waiter_;
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

// An instantiated CUDA graph.
class CudaGraph final : public GraphImpl {
 public:
  CudaGraph(cudaGraph_t graph, int device) : graph_(graph), device_(device) {
    try {
      STOWAGE_CUDA_TRY_FOR(cudaGraphInstantiate(&exec_, graph_, 0),
                           "cuda:{}: instantiating a captured CUDA graph", device_);
    } catch (...) {
      cudaGraphDestroy(graph_);
      throw;
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
    STOWAGE_CUDA_TRY_FOR(cudaGraphLaunch(exec_, static_cast<cudaStream_t>(stream.native_handle())),
                         "cuda:{}: launching a CUDA graph", device_);
  }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  int device_;
};

std::unique_ptr<GraphImpl> CudaStream::end_capture() {
  cudaGraph_t graph = nullptr;
  try {
    STOWAGE_CUDA_TRY_FOR(cudaStreamEndCapture(stream_, &graph),
                         "cuda:{}: ending a CUDA graph capture (the capture failed)", device_);
  } catch (...) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    throw;
  }
  STOWAGE_EXPECTS(graph != nullptr, DeviceError,
                  "cuda:{}: CUDA graph capture failed: expected a graph, found none", device_);
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
    // Out of memory is an OutOfMemoryError (DeviceStatusTraits<cudaError_t>).
    STOWAGE_CUDA_TRY_FOR(
        cudaMallocAsync(&ptr, bytes, static_cast<cudaStream_t>(stream.native_handle())),
        "{}: allocating {} bytes ({})", name(), bytes, free_of_total());
    // With no stream the memory must be usable on every stream at once (a
    // slot grown mid-run is written by the copy stream): the pool may have
    // made the legacy stream wait on the free of reused memory still read
    // on another stream, so wait for the legacy stream here.
    if (stream.is_null()) {
      STOWAGE_CUDA_TRY_FOR(cudaStreamSynchronize(nullptr),
                           "{}: waiting for the allocation of {} bytes", name(), bytes);
    }
    return ptr;
  }
  void do_deallocate(void* ptr, size_t bytes, StreamRef stream) override {
    ScopedDevice scope(device_);
    STOWAGE_CUDA_TRY_FOR(cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream.native_handle())),
                         "{}: freeing {} bytes at {}", name(), bytes, ptr);
    if (stream.is_null()) {
      STOWAGE_CUDA_TRY_FOR(cudaStreamSynchronize(nullptr), "{}: waiting for the free of {} bytes",
                           name(), bytes);
    }
  }
  // "F free of T bytes" for an error message (unchecked: it describes a
  // failure already being reported).
  static std::string free_of_total() {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      cudaGetLastError();
      return "free memory unknown";
    }
    return fmt::format("{} free of {}", free_bytes, total_bytes);
  }
  int device_;
};

// Large allocations are huge-page mappings (huge_page_memory.h) registered
// with cudaHostRegister, so the host reads them (weights computed on the
// host) with few TLB misses; where the driver refuses the registration, or
// for small ones, cudaHostAlloc.
class CudaPinnedHostMemory final : public MemoryResource {
 public:
  Tier tier() const override { return Tier::pinned_host(); }
  std::string name() const override { return "pinned host memory"; }

 private:
  void* do_allocate(size_t bytes, StreamRef) override {
    if (bytes == 0) return nullptr;
    if (bytes >= kHugePageMinBytes) {
      HugePageMapping mapping(bytes);
      if (cudaHostRegister(mapping.data(), mapping.bytes(), cudaHostRegisterPortable) ==
          cudaSuccess) {
        return registered_.keep(std::move(mapping));
      }
      cudaGetLastError();  // refused: clear it and take cudaHostAlloc's pages instead
    }
    void* ptr = nullptr;
    STOWAGE_CUDA_TRY_FOR(cudaHostAlloc(&ptr, bytes, cudaHostAllocPortable),
                         "{}: allocating {} bytes", name(), bytes);
    return ptr;
  }
  void do_deallocate(void* ptr, size_t bytes, StreamRef stream) override {
    // cudaFreeHost synchronizes the device; pinned buffers are long-lived, so
    // this stays off the hot path. A stream-ordered free waits for the stream.
    if (!stream.is_null()) stream.synchronize();
    const HugePageMapping mapping = registered_.take(ptr);  // unmapped when this returns
    if (mapping.data() != nullptr) {
      STOWAGE_CUDA_TRY_FOR(cudaHostUnregister(ptr), "{}: unregistering {} bytes at {}", name(),
                           bytes, ptr);
      return;
    }
    STOWAGE_CUDA_TRY_FOR(cudaFreeHost(ptr), "{}: freeing {} bytes at {}", name(), bytes, ptr);
  }
  HugePageMappings registered_;
};

class CudaAccelerator final : public Accelerator {
 public:
  explicit CudaAccelerator(int device) : device_(device), memory_(device) {
    cudaDeviceProp properties{};
    STOWAGE_CUDA_TRY_FOR(cudaGetDeviceProperties(&properties, device),
                         "cuda:{}: reading the device's properties", device);
    name_ = properties.name;
    total_ = properties.totalGlobalMem;
    grant_peer_access();
  }
  Tier tier() const override { return Tier::accelerator(Backend::kCuda, device_); }
  std::string description() const override {
    return fmt::format("{} ({})", name_, tier().to_string());
  }
  MemoryResource& memory() override { return memory_; }
  Stream create_stream() override {
    return Stream(std::make_unique<CudaStream>(device_, waiter_));
  }
  Event create_event() override { return Event(std::make_unique<CudaEvent>(device_, waiter_)); }
  void set_host_wait(HostWait wait) override { waiter_->set_sleeping(wait == HostWait::kSleep); }
  uint64_t total_bytes() const override { return total_; }
  uint64_t free_bytes() const override {
    ScopedDevice scope(device_);
    size_t free_bytes = 0, total_bytes = 0;
    STOWAGE_CUDA_TRY_FOR(cudaMemGetInfo(&free_bytes, &total_bytes),
                         "cuda:{}: asking for its free memory", device_);
    return free_bytes;
  }
  void make_current() override {
    STOWAGE_CUDA_TRY_FOR(cudaSetDevice(device_), "cuda:{}: making it the current device", device_);
  }
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
    STOWAGE_CUDA_TRY_FOR(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero),
                         "cuda:{}: resetting its memory pool's reserved high watermark", device_);
    STOWAGE_CUDA_TRY_FOR(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero),
                         "cuda:{}: resetting its memory pool's used high watermark", device_);
  }
  void release_cached_memory() override {
    ScopedDevice scope(device_);
    // Frees are stream-ordered: they reach the pool once their streams ran.
    STOWAGE_CUDA_TRY_FOR(cudaDeviceSynchronize(),
                         "cuda:{}: waiting for the device before trimming its memory pool",
                         device_);
    STOWAGE_CUDA_TRY_FOR(cudaMemPoolTrimTo(current_pool(), 0), "cuda:{}: trimming its memory pool",
                         device_);
  }

 private:
  // The pool cudaMallocAsync takes from on this device. REQUIRES: the device
  // is current.
  cudaMemPool_t current_pool() const {
    cudaMemPool_t pool = nullptr;
    STOWAGE_CUDA_TRY_FOR(cudaDeviceGetMemPool(&pool, device_), "cuda:{}: finding its memory pool",
                         device_);
    return pool;
  }
  uint64_t pool_attribute(cudaMemPool_t pool, cudaMemPoolAttr attribute) const {
    uint64_t value = 0;  // the four byte attributes are cuuint64_t
    STOWAGE_CUDA_TRY_FOR(cudaMemPoolGetAttribute(pool, attribute, &value),
                         "cuda:{}: reading its memory pool's attribute {}", device_,
                         static_cast<int>(attribute));
    return value;
  }

  int device_;
  std::shared_ptr<HostWaiter> waiter_ = std::make_shared<HostWaiter>(device_);
  // Memory from a device's stream-ordered pool is accessible from that
  // device alone until the pool grants access (peer access enabled with
  // cudaDeviceEnablePeerAccess does not cover pools): without this, a copy
  // between two accelerators (a module moved from cuda:1 to cuda:0, or
  // fetched from one to run on the other) fails with cudaErrorInvalidValue.
  // Grants every device that can reach this one read and write access.
  void grant_peer_access() {
    int count = 0;
    STOWAGE_CUDA_TRY_FOR(cudaGetDeviceCount(&count),
                         "cuda:{}: counting the devices for peer access", device_);
    ScopedDevice scope(device_);
    const cudaMemPool_t pool = current_pool();
    for (int peer = 0; peer < count; ++peer) {
      if (peer == device_) continue;
      int can_access = 0;
      STOWAGE_CUDA_TRY_FOR(cudaDeviceCanAccessPeer(&can_access, peer, device_),
                           "cuda:{}: asking whether cuda:{} can reach it", device_, peer);
      if (can_access == 0) continue;
      cudaMemAccessDesc access{};
      access.location.type = cudaMemLocationTypeDevice;
      access.location.id = peer;
      access.flags = cudaMemAccessFlagsProtReadWrite;
      STOWAGE_CUDA_TRY_FOR(cudaMemPoolSetAccess(pool, &access, 1),
                           "cuda:{}: granting cuda:{} access to its memory pool", device_, peer);
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
  STOWAGE_CUDA_TRY_FOR(cudaHostRegister(ptr, bytes, flags),
                       "registering {} bytes of {}host memory at {} with CUDA", bytes,
                       read_only ? "read-only " : "", data);
  return HostRegistration(data, bytes, [ptr] { cudaHostUnregister(ptr); });
}

}  // namespace stowage::detail
