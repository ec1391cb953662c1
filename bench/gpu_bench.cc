// quiver-gpu-bench: the GPU kernels against Quiver's CPU path on the same host,
// same data, same run. A binary of its own that needs only the kernels, so
// scripts/gpu-check.sh can ship it to a GPU machine without the service's
// libraries. Exits 2 (after saying why) where no GPU can be opened.
//
//   quiver-gpu-bench flat --n 1000000 --nq 10000 --dim 128 --k 10
//   quiver-gpu-bench ivf --n 1000000 --nq 10000 --nlist 1024 --nprobe 1,8,32 [--pq-dim 64]
//   quiver-gpu-bench graph --n 1000000 --nq 10000 --batch 10 --itopk 16,32,64
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench_util.h"
#include "common/synthetic_data.h"
#include "cuda/gpu_resources.h"
#include "kernels/blas.h"
#include "kernels/flat_search.h"
#include "kernels/gpu_search.h"
#include "kernels/graph.h"
#include "kernels/ivf_flat.h"
#include "kernels/ivf_pq.h"

namespace {

using quiver::bench::Clock;
using quiver::bench::Median;
using quiver::bench::MixtureBaseAndQueries;
using quiver::bench::RandomData;
using quiver::bench::RecallAtK;
using quiver::bench::Seconds;

struct Gpu {
  std::shared_ptr<quiver::cuda::GpuDevice> device;
  std::unique_ptr<quiver::cuda::GpuResources> resources;
};

// Opens device 0 and this thread's resources; the exit code on failure (2:
// no GPU, said on stdout), 0 on success.
int OpenGpu(Gpu* out, const quiver::cuda::GpuOptions& options = {}) {
  auto device = quiver::cuda::GpuDevice::Open(options);
  if (!device.ok()) {
    std::printf("no GPU: %s\n", device.status().ToString().c_str());
    return 2;
  }
  auto resources = (*device)->NewResources();
  if (!resources.ok()) {
    std::fprintf(stderr, "%s\n", resources.status().ToString().c_str());
    return 1;
  }
  out->device = *device;
  out->resources = std::move(resources).value();
  std::printf("device: %s, budget %.1f GiB\n", out->device->name().c_str(),
              double(out->device->budget_bytes()) / (1 << 30));
  return 0;
}

// Exact L2 neighbours of every query, searched on the GPU; false (after
// saying why) on failure.
bool GpuGroundTruth(quiver::cuda::GpuResources& gpu, const std::vector<float>& base, const std::vector<float>& norms,
                    const std::vector<float>& queries, size_t dim, size_t k, std::vector<int64_t>* truth) {
  const size_t n = base.size() / dim, nq = queries.size() / dim;
  truth->resize(nq * k);
  std::vector<float> scores(nq * k);
  quiver::kernels::Resources on_gpu;
  on_gpu.gpu = &gpu;
  const quiver::Status st = quiver::kernels::FlatSearch(on_gpu, {base.data(), norms.data(), n, dim}, queries.data(), nq,
                                                        {quiver::kernels::Metric::kL2, k}, truth->data(), scores.data());
  if (!st.ok()) std::fprintf(stderr, "ground truth: %s\n", st.ToString().c_str());
  return st.ok();
}

struct FlatOptions {
  size_t n = 1000000, nq = 10000, dim = 128, k = 10;
  int repeats = 5, threads = 0;
  size_t cpu_queries = 100;
  double peak_tflops = 67.0;  // H100 SXM FP32 (non-tensor)
  std::vector<std::string> tiles;  // "BASExQUERIES" tile shapes to time besides the default
};

// The resident search again with each tile shape ("65536x2048": base rows x
// queries per tile; 0 = the default's choice; a ":3xtf32" suffix selects
// FlatGemm::kTf32x3, none or ":fp32" FlatGemm::kFp32), each on its own
// device handle; ids and scores compared with the default run's (ref_rows,
// ref_scores).
void RunFlatTileSweep(const FlatOptions& o, const quiver::kernels::BaseView& view, const std::vector<float>& queries,
                      const std::vector<int64_t>& ref_rows, const std::vector<float>& ref_scores, std::ofstream& md) {
  if (o.tiles.empty()) return;
  char line[256];
  std::snprintf(line, sizeof line,
                "\n| base rows x queries per tile[:gemm] | seconds | TFLOP/s | %% of %.0f | ids equal to the default run's | worst relative score difference |\n"
                "|---|---:|---:|---:|---:|---:|\n",
                o.peak_tflops);
  md << line;
  std::printf("%s", line);
  for (const std::string& shape : o.tiles) {
    quiver::cuda::GpuOptions options;
    char gemm[16] = "fp32";
    const int fields = std::sscanf(shape.c_str(), "%zux%zu:%15s", &options.flat_base_tile_rows,
                                   &options.flat_query_tile_rows, gemm);
    if (fields < 2 || (std::string(gemm) != "fp32" && std::string(gemm) != "3xtf32")) {
      std::fprintf(stderr, "--tiles: '%s' is not BASExQUERIES[:fp32|:3xtf32]\n", shape.c_str());
      continue;
    }
    options.flat_gemm = std::string(gemm) == "3xtf32" ? quiver::cuda::FlatGemm::kTf32x3 : quiver::cuda::FlatGemm::kFp32;
    Gpu handles;
    if (OpenGpu(&handles, options) != 0) return;
    auto resident = quiver::kernels::gpu::DeviceFlatBase::Upload(*handles.resources, view, /*long_lived=*/true);
    if (!resident.ok()) {
      std::fprintf(stderr, "upload: %s\n", resident.status().ToString().c_str());
      return;
    }
    std::vector<int64_t> rows(o.nq * o.k);
    std::vector<float> scores(o.nq * o.k);
    std::vector<double> times;
    for (int r = 0; r < o.repeats + 1; ++r) {
      const auto t0 = Clock::now();
      const quiver::Status st = quiver::kernels::gpu::FlatSearch(*handles.resources, *resident, nullptr, queries.data(),
                                                                 o.nq, {quiver::kernels::Metric::kL2, o.k}, rows.data(),
                                                                 scores.data());
      if (!st.ok()) {
        std::fprintf(stderr, "%s: %s\n", shape.c_str(), st.ToString().c_str());
        return;
      }
      if (r > 0) times.push_back(Seconds(t0));
    }
    size_t same = 0;
    double worst = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      same += rows[i] == ref_rows[i];
      worst = std::max(worst, std::abs(double(scores[i]) - ref_scores[i]) / std::max(1.0, std::abs(double(ref_scores[i]))));
    }
    const double tflops = 2.0 * double(o.nq) * double(o.n) * double(o.dim) / Median(times) / 1e12;
    std::snprintf(line, sizeof line, "| %s | %.4f | %.2f | %.0f%% | %.5f | %.2e |\n", shape.c_str(), Median(times),
                  tflops, 100.0 * tflops / o.peak_tflops, double(same) / double(rows.size()), worst);
    md << line;
    std::printf("%s", line);
  }
}

// FLAT with the base resident on the device (what a served segment does) and
// copied per call, against the CPU path on the first cpu_queries queries
// (which also gives the agreement check). Reports achieved FP32 TFLOP/s.
int RunFlat(const FlatOptions& o) {
  std::printf("flat: n=%zu nq=%zu dim=%zu k=%zu repeats=%d; CPU: first %zu queries\n", o.n, o.nq, o.dim, o.k,
              o.repeats, o.cpu_queries);
  Gpu gpu_handles;
  if (const int rc = OpenGpu(&gpu_handles); rc != 0) return rc;
  auto& device = gpu_handles.device;
  auto& gpu = gpu_handles.resources;
  const auto base = RandomData(o.n, o.dim, 1);
  const auto queries = RandomData(o.nq, o.dim, 2);
  std::vector<float> norms(o.n);
  quiver::kernels::SquaredNorms(base.data(), o.n, o.dim, norms.data());
  const quiver::kernels::BaseView view{base.data(), norms.data(), o.n, o.dim};
  const quiver::kernels::FlatSearchParams params{quiver::kernels::Metric::kL2, o.k};

  auto t0 = Clock::now();
  auto resident = quiver::kernels::gpu::DeviceFlatBase::Upload(*gpu, view, /*long_lived=*/true);
  if (!resident.ok()) {
    std::fprintf(stderr, "upload: %s\n", resident.status().ToString().c_str());
    return 1;
  }
  std::printf("base upload: %.3f s\n", Seconds(t0));

  const size_t cq = std::min(o.cpu_queries, o.nq);
  std::vector<int64_t> g_rows(o.nq * o.k), h_rows(o.nq * o.k), c_rows(cq * o.k);
  std::vector<float> g_scores(o.nq * o.k), h_scores(o.nq * o.k), c_scores(cq * o.k);
  std::vector<double> t_resident, t_copied, t_cpu;
  quiver::kernels::Resources cpu;
  cpu.num_threads = o.threads;
  quiver::kernels::Resources on_gpu;
  on_gpu.gpu = gpu.get();
  for (int r = 0; r < o.repeats + 1; ++r) {  // the first round warms up and is dropped
    t0 = Clock::now();
    quiver::Status st = quiver::kernels::gpu::FlatSearch(*gpu, *resident, nullptr, queries.data(), o.nq, params,
                                                         g_rows.data(), g_scores.data());
    if (r > 0) t_resident.push_back(Seconds(t0));
    t0 = Clock::now();
    if (st.ok()) {
      st = quiver::kernels::FlatSearch(on_gpu, view, queries.data(), o.nq, params, h_rows.data(), h_scores.data());
    }
    if (r > 0) t_copied.push_back(Seconds(t0));
    t0 = Clock::now();
    if (st.ok()) st = quiver::kernels::FlatSearch(cpu, view, queries.data(), cq, params, c_rows.data(), c_scores.data());
    if (r > 0) t_cpu.push_back(Seconds(t0));
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 1;
    }
  }
  size_t same = 0;
  double worst = 0;
  for (size_t i = 0; i < cq * o.k; ++i) {
    same += g_rows[i] == c_rows[i];
    worst = std::max(worst, std::abs(double(g_scores[i]) - c_scores[i]) / std::max(1.0, std::abs(double(c_scores[i]))));
  }
  const double agree = double(same) / double(cq * o.k);
  const double tflops = 2.0 * double(o.nq) * double(o.n) * double(o.dim) / Median(t_resident) / 1e12;
  const double qps_resident = double(o.nq) / Median(t_resident);
  const double qps_copied = double(o.nq) / Median(t_copied);
  const double qps_cpu = double(cq) / Median(t_cpu);

  std::filesystem::create_directories("bench/results");
  std::ofstream md("bench/results/gpu_flat.md");
  char line[512];
  std::snprintf(line, sizeof line,
                "### GPU FLAT: %zu queries vs %zu x %zu random, k = %zu (%s)\n\n"
                "| method | QPS (median of %d) | seconds | × CPU |\n|---|---:|---:|---:|\n",
                o.nq, o.n, o.dim, o.k, device->name().c_str(), o.repeats);
  md << line;
  std::printf("\n%s", line);
  auto row = [&](const char* name, double qps, double secs) {
    std::snprintf(line, sizeof line, "| %s | %.0f | %.4f | %.1f |\n", name, qps, secs, qps / qps_cpu);
    md << line;
    std::printf("%s", line);
  };
  row("GPU, resident base", qps_resident, Median(t_resident));
  row("GPU, base copied per call", qps_copied, Median(t_copied));
  row("CPU (Quiver, this host)", qps_cpu, Median(t_cpu));
  std::snprintf(line, sizeof line,
                "\nGPU resident: %.2f TFLOP/s = %.0f%% of the %.1f TFLOP/s FP32 peak. Ids equal to the CPU's: %.4f; "
                "worst relative score difference: %.2e.\n",
                tflops, 100.0 * tflops / o.peak_tflops, o.peak_tflops, agree, worst);
  md << line;
  std::printf("%s", line);
  RunFlatTileSweep(o, view, queries, g_rows, g_scores, md);
  return 0;
}

struct IvfOptions {
  size_t n = 1000000, nq = 10000, dim = 128, k = 10, clusters = 1000;
  uint32_t nlist = 1024;
  uint32_t pq_dim = 0;  // 0: IVF_FLAT; else IVF_PQ (8 bits) with this many sub-quantisers
  uint32_t refine_factor = 8;
  std::vector<uint32_t> nprobes = {1, 4, 8, 32};
  int repeats = 5, threads = 0;
};

// IVF_FLAT (or IVF_PQ with --pq-dim) on a Gaussian mixture: the index built
// on the CPU, searched on the GPU (resident) and on the CPU at each nprobe;
// recall@k against exact search done on the GPU.
int RunIvf(const IvfOptions& o) {
  const bool pq = o.pq_dim > 0;
  std::printf("ivf: n=%zu nq=%zu dim=%zu k=%zu nlist=%u clusters=%zu repeats=%d %s\n", o.n, o.nq, o.dim, o.k, o.nlist,
              o.clusters, o.repeats,
              pq ? ("IVF_PQ pq_dim " + std::to_string(o.pq_dim) + " refine " + std::to_string(o.refine_factor)).c_str()
                 : "IVF_FLAT");
  Gpu gpu_handles;
  if (const int rc = OpenGpu(&gpu_handles); rc != 0) return rc;
  auto& device = gpu_handles.device;
  auto& gpu = gpu_handles.resources;
  const auto [base, queries] = MixtureBaseAndQueries(o.n, o.nq, o.dim, o.clusters);
  quiver::kernels::Resources cpu;
  cpu.num_threads = o.threads;
  std::vector<float> norms(o.n);
  quiver::kernels::SquaredNorms(base.data(), o.n, o.dim, norms.data());
  const quiver::kernels::BaseView view{base.data(), norms.data(), o.n, o.dim};
  const auto l2 = quiver::kernels::Metric::kL2;
  auto t0 = Clock::now();
  // One of the two indexes, its device copy, and how each side searches it.
  std::unique_ptr<quiver::kernels::IvfFlatIndex> flat_index;
  std::unique_ptr<quiver::kernels::IvfPqIndex> pq_index;
  quiver::kernels::gpu::DeviceIvfFlat flat_resident;
  quiver::kernels::gpu::DeviceIvfPq pq_resident;
  quiver::Status st = [&]() -> quiver::Status {
    if (pq) {
      QUIVER_ASSIGN_OR_RETURN(pq_index, quiver::kernels::IvfPqIndex::Build(cpu, l2, base.data(), o.n, o.dim,
                                                                           {.nlist = o.nlist, .pq_dim = o.pq_dim}));
    } else {
      QUIVER_ASSIGN_OR_RETURN(flat_index,
                              quiver::kernels::IvfFlatIndex::Build(cpu, l2, base.data(), o.n, o.dim, {.nlist = o.nlist}));
    }
    std::printf("CPU build: %.1f s\n", Seconds(t0));
    if (pq) {
      QUIVER_ASSIGN_OR_RETURN(pq_resident, quiver::kernels::gpu::DeviceIvfPq::Upload(*gpu, *pq_index, true));
    } else {
      QUIVER_ASSIGN_OR_RETURN(flat_resident, quiver::kernels::gpu::DeviceIvfFlat::Upload(*gpu, *flat_index, true));
    }
    return quiver::Status::Ok();
  }();
  if (!st.ok()) {
    std::fprintf(stderr, "build and upload: %s\n", st.ToString().c_str());
    return 1;
  }
  auto gpu_search = [&](uint32_t nprobe, int64_t* rows, float* scores) {
    return pq ? quiver::kernels::gpu::IvfPqSearch(*gpu, pq_resident, view, queries.data(), o.nq, o.k, nprobe,
                                                  o.refine_factor, rows, scores)
              : quiver::kernels::gpu::IvfFlatSearch(*gpu, flat_resident, nullptr, queries.data(), o.nq, o.k, nprobe,
                                                    rows, scores);
  };
  auto cpu_search = [&](uint32_t nprobe, int64_t* rows, float* scores) {
    return pq ? pq_index->Search(cpu, view, queries.data(), o.nq, o.k,
                                 {.nprobe = nprobe, .refine_factor = o.refine_factor}, rows, scores)
              : flat_index->Search(cpu, queries.data(), o.nq, o.k, nprobe, nullptr, rows, scores);
  };
  std::vector<int64_t> truth;
  if (!GpuGroundTruth(*gpu, base, norms, queries, o.dim, o.k, &truth)) return 1;
  auto recall = [&](const std::vector<int64_t>& got) { return RecallAtK(got, truth, o.nq, o.k); };
  std::filesystem::create_directories("bench/results");
  std::ofstream md(pq ? "bench/results/gpu_ivf_pq.md" : "bench/results/gpu_ivf.md");
  char line[512];
  const std::string kind = pq ? "IVF_PQ (pq_dim " + std::to_string(o.pq_dim) + ", 8 bits, refine " +
                                    std::to_string(o.refine_factor) + ")"
                              : "IVF_FLAT";
  std::snprintf(line, sizeof line,
                "### GPU %s: %zu queries vs %zu x %zu (%zu clusters), nlist %u, k = %zu (%s)\n\n"
                "| nprobe | recall GPU / CPU | GPU QPS | CPU QPS | GPU / CPU |\n|---:|---|---:|---:|---:|\n",
                kind.c_str(), o.nq, o.n, o.dim, o.clusters, o.nlist, o.k, device->name().c_str());
  md << line;
  std::printf("\n%s", line);
  // Batches of o.batch spread each query over several blocks; one batch of
  // all queries takes one block each: their recalls may differ.
  std::vector<int64_t> b_rows(o.nq * o.k), g_rows(o.nq * o.k), c_rows(o.nq * o.k);
  std::vector<float> g_scores(o.nq * o.k), c_scores(o.nq * o.k);
  for (uint32_t nprobe : o.nprobes) {
    std::vector<double> t_gpu, t_cpu;
    for (int r = 0; r < o.repeats + 1; ++r) {
      t0 = Clock::now();
      st = gpu_search(nprobe, g_rows.data(), g_scores.data());
      if (r > 0) t_gpu.push_back(Seconds(t0));
      t0 = Clock::now();
      if (st.ok()) st = cpu_search(nprobe, c_rows.data(), c_scores.data());
      if (r > 0) t_cpu.push_back(Seconds(t0));
      if (!st.ok()) {
        std::fprintf(stderr, "nprobe %u: %s\n", nprobe, st.ToString().c_str());
        return 1;
      }
    }
    const double g = double(o.nq) / Median(t_gpu), c = double(o.nq) / Median(t_cpu);
    std::snprintf(line, sizeof line, "| %u | %.4f / %.4f | %.0f | %.0f | %.1f |\n", nprobe, recall(g_rows),
                  recall(c_rows), g, c, g / c);
    md << line;
    std::printf("%s", line);
  }
  return 0;
}

struct GraphOptions {
  size_t n = 1000000, nq = 10000, dim = 128, k = 10, clusters = 1000, batch = 10;
  uint32_t degree = 32;
  std::vector<uint32_t> itopks = {16, 32, 64, 128, 256};
  std::vector<uint32_t> widths = {1};  // search_width: nodes expanded per step
  std::vector<uint32_t> blocks_per_query = {0};  // GpuOptions::graph_blocks_per_query; 0 = chosen
  int repeats = 3, threads = 0;
  bool gpu_build = false;  // also build on the GPU (kNN graphs, pruning), and search that graph
};

// GRAPH on a Gaussian mixture: the graph built on the CPU, searched on the GPU
// (resident) in batches of `batch` queries one after another (the issue's
// latency-bound case) and in one batch of all, and on the CPU; recall@k
// against exact search done on the GPU.
// Every (a, b) pair, a outermost.
std::vector<std::pair<uint32_t, uint32_t>> Sweep(const std::vector<uint32_t>& as, const std::vector<uint32_t>& bs) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (uint32_t a : as) {
    for (uint32_t b : bs) out.emplace_back(a, b);
  }
  return out;
}

int RunGraph(const GraphOptions& o) {
  std::printf("graph: n=%zu nq=%zu dim=%zu k=%zu degree=%u batch=%zu clusters=%zu repeats=%d\n", o.n, o.nq, o.dim, o.k,
              o.degree, o.batch, o.clusters, o.repeats);
  Gpu gpu_handles;
  if (const int rc = OpenGpu(&gpu_handles); rc != 0) return rc;
  auto& gpu = *gpu_handles.resources;
  const auto [base, queries] = MixtureBaseAndQueries(o.n, o.nq, o.dim, o.clusters);
  std::vector<float> norms(o.n);
  quiver::kernels::SquaredNorms(base.data(), o.n, o.dim, norms.data());
  quiver::kernels::Resources cpu;
  cpu.num_threads = o.threads;
  auto t0 = Clock::now();
  quiver::kernels::GraphBuildParams params;
  params.degree = o.degree;
  auto index = quiver::kernels::GraphIndex::Build(cpu, quiver::kernels::Metric::kL2, base.data(), o.n, o.dim, params);
  if (!index.ok()) {
    std::fprintf(stderr, "build: %s\n", index.status().ToString().c_str());
    return 1;
  }
  std::printf("CPU build: %.1f s\n", Seconds(t0));
  if (o.gpu_build) {
    // The kNN graphs and layer 0's pruning on the GPU, the rest on the same
    // CPU threads; the sweep below then searches this graph.
    quiver::kernels::Resources with_gpu = cpu;
    with_gpu.gpu = &gpu;
    t0 = Clock::now();
    auto built = quiver::kernels::GraphIndex::Build(with_gpu, quiver::kernels::Metric::kL2, base.data(), o.n, o.dim,
                                                    params);
    if (!built.ok()) {
      std::fprintf(stderr, "GPU build: %s\n", built.status().ToString().c_str());
      return 1;
    }
    std::printf("GPU build (kNN graphs and layer 0's pruning on the GPU, the rest on %s CPU threads): %.1f s; the "
                "sweep searches this graph\n",
                o.threads > 0 ? std::to_string(o.threads).c_str() : "all", Seconds(t0));
    index = std::move(built);
  }
  const quiver::kernels::BaseView view{base.data(), norms.data(), o.n, o.dim};
  auto resident = quiver::kernels::gpu::DeviceGraph::Upload(gpu, **index, view, /*long_lived=*/true);
  if (!resident.ok()) {
    std::fprintf(stderr, "upload: %s\n", resident.status().ToString().c_str());
    return 1;
  }
  std::vector<int64_t> truth;
  if (!GpuGroundTruth(gpu, base, norms, queries, o.dim, o.k, &truth)) return 1;
  std::filesystem::create_directories("bench/results");
  std::ofstream md("bench/results/gpu_graph.md");
  char line[512];
  std::snprintf(line, sizeof line,
                "### GPU GRAPH: %zu queries vs %zu x %zu (%zu clusters), degree %u, k = %zu (%s)\n\n"
                "| itopk | width | blocks per query, batches | recall GPU batches / GPU one batch / CPU | GPU QPS, batches of %zu | GPU QPS, one batch | CPU QPS | GPU (batches) / CPU |\n"
                "|---:|---:|---:|---|---:|---:|---:|---:|\n",
                o.nq, o.n, o.dim, o.clusters, o.degree, o.k, gpu_handles.device->name().c_str(), o.batch);
  md << line;
  std::printf("\n%s", line);
  // Batches of o.batch spread each query over several blocks; one batch of
  // all queries takes one block each: their recalls may differ. A forced
  // number of blocks per query takes a device opened with that option (and
  // its own copy of the graph); the one batch and the CPU run once, with
  // the first value.
  struct Batched {
    Gpu handles;
    quiver::kernels::gpu::DeviceGraph graph;
  };
  std::vector<Batched> batched;
  for (const uint32_t blocks : o.blocks_per_query) {
    quiver::cuda::GpuOptions options;
    options.graph_blocks_per_query = blocks;
    Batched b;
    if (const int rc = OpenGpu(&b.handles, options); rc != 0) return rc;
    auto copy = quiver::kernels::gpu::DeviceGraph::Upload(*b.handles.resources, **index, view, /*long_lived=*/true);
    if (!copy.ok()) {
      std::fprintf(stderr, "upload: %s\n", copy.status().ToString().c_str());
      return 1;
    }
    b.graph = std::move(copy).value();
    batched.push_back(std::move(b));
  }
  std::vector<int64_t> b_rows(o.nq * o.k), g_rows(o.nq * o.k), c_rows(o.nq * o.k);
  std::vector<float> g_scores(o.nq * o.k), c_scores(o.nq * o.k);
  for (const auto& [width, itopk] : Sweep(o.widths, o.itopks)) {
    for (size_t bi = 0; bi < batched.size(); ++bi) {
      auto& batch_gpu = *batched[bi].handles.resources;
      const bool whole_and_cpu = bi == 0;
      std::vector<double> t_batches, t_whole, t_cpu;
      quiver::Status st;
      for (int r = 0; r < o.repeats + 1 && st.ok(); ++r) {
        t0 = Clock::now();
        for (size_t q0 = 0; q0 < o.nq && st.ok(); q0 += o.batch) {
          const size_t count = std::min(o.batch, o.nq - q0);
          st = quiver::kernels::gpu::GraphSearch(batch_gpu, batched[bi].graph, nullptr, queries.data() + q0 * o.dim,
                                                 count, o.k, itopk, width, b_rows.data() + q0 * o.k,
                                                 g_scores.data() + q0 * o.k);
        }
        if (r > 0) t_batches.push_back(Seconds(t0));
        if (!whole_and_cpu) continue;
        t0 = Clock::now();
        if (st.ok()) {
          st = quiver::kernels::gpu::GraphSearch(gpu, *resident, nullptr, queries.data(), o.nq, o.k, itopk, width,
                                                 g_rows.data(), g_scores.data());
        }
        if (r > 0) t_whole.push_back(Seconds(t0));
        t0 = Clock::now();
        if (st.ok()) {
          st = (*index)->Search(cpu, view, queries.data(), o.nq, o.k, {.itopk = itopk, .search_width = width},
                                c_rows.data(), c_scores.data());
        }
        if (r > 0) t_cpu.push_back(Seconds(t0));
      }
      if (!st.ok()) {
        std::fprintf(stderr, "itopk %u: %s\n", itopk, st.ToString().c_str());
        return 1;
      }
      const double b = double(o.nq) / Median(t_batches);
      const std::string blocks =
          o.blocks_per_query[bi] == 0 ? "chosen" : std::to_string(o.blocks_per_query[bi]);
      if (whole_and_cpu) {
        const double w = double(o.nq) / Median(t_whole), c = double(o.nq) / Median(t_cpu);
        std::snprintf(line, sizeof line, "| %u | %u | %s | %.4f / %.4f / %.4f | %.0f | %.0f | %.0f | %.1f |\n", itopk,
                      width, blocks.c_str(), RecallAtK(b_rows, truth, o.nq, o.k), RecallAtK(g_rows, truth, o.nq, o.k),
                      RecallAtK(c_rows, truth, o.nq, o.k), b, w, c, b / c);
      } else {
        std::snprintf(line, sizeof line, "| %u | %u | %s | %.4f / — / — | %.0f | — | — | — |\n", itopk, width,
                      blocks.c_str(), RecallAtK(b_rows, truth, o.nq, o.k), b);
      }
      md << line;
      std::printf("%s", line);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  quiver::kernels::EnsureFastBlas(argv);
  CLI::App app{"quiver-gpu-bench: Quiver's GPU kernels against its CPU path, same data, same run", "quiver-gpu-bench"};
  app.require_subcommand(1);
  FlatOptions flat_options;
  auto* flat = app.add_subcommand("flat", "exact search: resident base, per-call base, CPU");
  flat->add_option("--n", flat_options.n, "base vectors")->capture_default_str();
  flat->add_option("--nq", flat_options.nq, "queries")->capture_default_str();
  flat->add_option("--dim", flat_options.dim, "dimension")->capture_default_str();
  flat->add_option("--k", flat_options.k, "neighbours")->capture_default_str();
  flat->add_option("--repeats", flat_options.repeats, "timed rounds (median reported)")->capture_default_str();
  flat->add_option("--threads", flat_options.threads, "CPU threads (0 = all)")->capture_default_str();
  flat->add_option("--cpu-queries", flat_options.cpu_queries, "queries the CPU runs (agreement check)")
      ->capture_default_str();
  flat->add_option("--tiles", flat_options.tiles,
                   "tile shapes to time too, BASExQUERIES[:fp32|:3xtf32] (e.g. 16384x1024, 0x0:3xtf32; 0 = the "
                   "default's choice; the GEMM: fp32 unless :3xtf32; the main run takes the device's default)")
      ->delimiter(',');
  flat->add_option("--peak-tflops", flat_options.peak_tflops, "FP32 peak for the roofline fraction")
      ->capture_default_str();
  IvfOptions ivf_options;
  auto* ivf = app.add_subcommand("ivf", "IVF_FLAT: GPU (resident) against the CPU index, recall against exact");
  ivf->add_option("--n", ivf_options.n, "base vectors")->capture_default_str();
  ivf->add_option("--nq", ivf_options.nq, "queries")->capture_default_str();
  ivf->add_option("--dim", ivf_options.dim, "dimension")->capture_default_str();
  ivf->add_option("--k", ivf_options.k, "neighbours")->capture_default_str();
  ivf->add_option("--clusters", ivf_options.clusters, "Gaussian mixture components")->capture_default_str();
  ivf->add_option("--nlist", ivf_options.nlist, "inverted lists")->capture_default_str();
  ivf->add_option("--nprobe", ivf_options.nprobes, "lists probed (comma-separated sweep)")
      ->delimiter(',')
      ->capture_default_str();
  ivf->add_option("--pq-dim", ivf_options.pq_dim, "IVF_PQ with this many sub-quantisers (8 bits); 0 = IVF_FLAT")
      ->capture_default_str();
  ivf->add_option("--refine-factor", ivf_options.refine_factor, "IVF_PQ: k x this candidates re-ranked exactly")
      ->capture_default_str();
  ivf->add_option("--repeats", ivf_options.repeats, "timed rounds (median reported)")->capture_default_str();
  ivf->add_option("--threads", ivf_options.threads, "CPU threads (0 = all)")->capture_default_str();
  GraphOptions graph_options;
  auto* graph = app.add_subcommand("graph", "GRAPH: GPU (resident, batches and whole) against the CPU, recall against exact");
  graph->add_option("--n", graph_options.n, "base vectors")->capture_default_str();
  graph->add_option("--nq", graph_options.nq, "queries")->capture_default_str();
  graph->add_option("--dim", graph_options.dim, "dimension")->capture_default_str();
  graph->add_option("--k", graph_options.k, "neighbours")->capture_default_str();
  graph->add_option("--clusters", graph_options.clusters, "Gaussian mixture components")->capture_default_str();
  graph->add_option("--degree", graph_options.degree, "graph out-degree")->capture_default_str();
  graph->add_option("--batch", graph_options.batch, "queries per GPU call in the batched run")->capture_default_str();
  graph->add_option("--itopk", graph_options.itopks, "beam sizes (comma-separated sweep)")
      ->delimiter(',')
      ->capture_default_str();
  graph->add_option("--search-width", graph_options.widths, "nodes expanded per step (comma-separated sweep)")
      ->delimiter(',')
      ->capture_default_str();
  graph->add_option("--blocks-per-query", graph_options.blocks_per_query,
                    "thread blocks per query in the batched run (comma-separated sweep; 0 = chosen)")
      ->delimiter(',')
      ->capture_default_str();
  graph->add_flag("--gpu-build", graph_options.gpu_build,
                  "also build on the GPU (kNN graphs and layer 0's pruning; timed), and search that graph");
  graph->add_option("--repeats", graph_options.repeats, "timed rounds (median reported)")->capture_default_str();
  graph->add_option("--threads", graph_options.threads, "CPU threads (0 = all)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (flat->parsed()) return RunFlat(flat_options);
  if (ivf->parsed()) return RunIvf(ivf_options);
  if (graph->parsed()) return RunGraph(graph_options);
  return 1;
}
