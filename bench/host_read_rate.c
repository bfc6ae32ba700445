// The host memory read rate with T threads: what llama.cpp's CPU-resident layers are read at
// during a batch-1 decode (every token reads their weights once from DRAM). Each thread sums
// its own contiguous share of a buffer far larger than the caches; the best of R passes is
// reported, as one JSON line. Not a Bazel target: bench/compare_llamacpp.py compiles it on the
// GPU host with `cc -O3 -march=native -fopenmp` (no Bazel there).
//   host_read_rate [GiB=4] [threads=all] [passes=5]
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char** argv) {
  const double gib = argc > 1 ? atof(argv[1]) : 4.0;
  const int threads = argc > 2 ? atoi(argv[2]) : omp_get_max_threads();
  const int passes = argc > 3 ? atoi(argv[3]) : 5;
  const size_t words = (size_t)(gib * (1u << 30)) / sizeof(uint64_t);
  uint64_t* data = NULL;
  if (posix_memalign((void**)&data, 4096, words * sizeof(uint64_t)) != 0) {
    fprintf(stderr, "host_read_rate: could not allocate %.1f GiB\n", gib);
    return 1;
  }
  omp_set_num_threads(threads);
  // First touch by the threads that will read: pages land on their NUMA nodes.
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < words; ++i) data[i] = i;
  double best = 0;
  uint64_t sink = 0;
  for (int p = 0; p < passes; ++p) {
    uint64_t sum = 0;
    const double t0 = omp_get_wtime();
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (size_t i = 0; i < words; ++i) sum += data[i];
    const double seconds = omp_get_wtime() - t0;
    sink += sum;
    const double rate = (double)(words * sizeof(uint64_t)) / seconds;
    if (rate > best) best = rate;
  }
  printf("{\"host_read_bytes_per_s\": %.6e, \"threads\": %d, \"buffer_bytes\": %zu, "
         "\"passes\": %d, \"checksum\": %llu}\n",
         best, threads, words * sizeof(uint64_t), passes, (unsigned long long)(sink & 0xff));
  free(data);
  return 0;
}
