// quiver-bench: Quiver measured against FAISS in the same run, on the same data.
//
//   quiver-bench flat   --n 100000 --nq 1000 --dim 128 --k 10 --threads 2 --repeats 5
//   quiver-bench ivf    --n 200000 --nlist 1024 [--grpc] [--hdf5 sift-128-euclidean.hdf5]
//   quiver-bench upsert --clients 4 --batch 1000 --dim 128 --total 400000
//   quiver-bench restart --n 1000000 --dim 128
//   quiver-bench gen    --n 100000 --dim 384 --metric cosine --out DIR
//   quiver-bench filter --n 1000000 --buckets 100
//   quiver-bench cluster --rounds 3 --failovers 10
//
// `flat` times SearchBatch three ways — Quiver in-process, Quiver through
// gRPC (a quiverd Server in this process, queries over loopback), and FAISS
// IndexFlatL2 — interleaving the repeats so machine noise hits all alike, and
// reports the median QPS and the ratios. FAISS gets the same thread count,
// multi-threaded BLAS and its own OpenMP. It also writes the data as .fvecs so
// bench/faiss_pypi_flat.py can time the optimised PyPI FAISS on it.
// `upsert` measures durable Upsert throughput: every acknowledged batch is
// fsynced in the log before the reply. `restart` fills an IVF_FLAT collection
// through gRPC, waits for every sealed segment's index, stops the server and
// times a restart until it serves again, checking the answers are unchanged.
// `cluster` starts quiverd processes: durable Upsert of 3 nodes against one
// (rounds interleaved, with the CPU seconds each node used and the cores the
// machine kept busy while timed), then leader
// failover, kill -9 to the first write acknowledged after it
// (bench/RESULTS.md).
#include <arpa/inet.h>
#include <fcntl.h>
#include <cblas.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <sys/resource.h>
#include <grpcpp/grpcpp.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "bench/bench_util.h"
#include "bench/datasets.h"
#include "bench/hnswlib_baseline.h"
#include "common/synthetic_data.h"
#include "common/vector_file.h"
#include "kernels/blas.h"
#include "kernels/flat_search.h"
#include "kernels/graph.h"
#include "kernels/ivf_flat.h"
#include "kernels/ivf_pq.h"
#include "kernels/simd.h"
#include "quiver/v1/cluster.grpc.pb.h"
#include "quiver/v1/collections.grpc.pb.h"
#include "quiver/v1/points.grpc.pb.h"
#include "service/server.h"

namespace {

using quiver::bench::Clock;
using quiver::bench::Median;
using quiver::bench::QpsAtRecall;
using quiver::bench::RandomData;
using quiver::bench::RecallAtK;
using quiver::bench::Seconds;
using quiver::bench::SweepPoint;

// A quiverd Server in this process on ephemeral ports, for the gRPC numbers.
class LocalServer {
 public:
  // `keep_data`: restart on what an earlier server in `dir` left.
  // `batch_wait_us`: search_batch_max_wait_us (0 = no dynamic batching).
  // `gpu`: the server's `gpu` setting (auto, off or a device number).
  explicit LocalServer(const std::string& dir, uint32_t threads, bool keep_data = false, uint32_t batch_wait_us = 200,
                       const std::string& gpu = "auto") {
    if (!keep_data) std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::filesystem::remove(dir + "/ready.json");
    quiver::service::ServerConfig cfg;
    cfg.listen = "127.0.0.1:0";
    cfg.admin_listen = "127.0.0.1:0";
    cfg.data_dir = dir + "/data";
    cfg.ready_file = dir + "/ready.json";
    cfg.search_threads = threads;
    cfg.search_batch_max_wait_us = batch_wait_us;
    cfg.gpu = gpu;
    cfg.max_message_bytes = 1ull << 30;
    cfg.log_level = "warn";
    server_ = std::make_unique<quiver::service::Server>(cfg);
    thread_ = std::thread([this] { status_ = server_->Run(); });
    int port = 0;
    for (int i = 0; i < 3000 && port == 0; ++i) {
      std::ifstream f(cfg.ready_file);
      std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (auto p = s.find("\"grpc_port\": "); p != std::string::npos) port = std::atoi(s.c_str() + p + 13);
      if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    target_ = "127.0.0.1:" + std::to_string(port);
    channel = NewChannel(0);
  }
  // Index builds and segment files written in the background compete with
  // the searches being timed: wait for them.
  void WaitForBackgroundWork() { (void)server_->WaitForBackgroundWork(std::chrono::minutes(10)); }
  ~LocalServer() {
    server_->RequestStop();
    thread_.join();
  }
  std::shared_ptr<grpc::Channel> channel;
  const std::string& address() const { return target_; }

  // A channel with its own connection (distinct arguments keep gRPC from
  // sharing the subchannel), as a separate client process would have.
  std::shared_ptr<grpc::Channel> NewChannel(int client) const {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(1 << 30);
    args.SetMaxSendMessageSize(1 << 30);
    args.SetInt("quiver.bench_client", client);
    return grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args);
  }

 private:
  std::string target_;
  std::unique_ptr<quiver::service::Server> server_;
  std::thread thread_;
  quiver::Status status_;
};

bool CreateCollection(grpc::Channel* ch, const std::string& name, uint32_t dim) {
  auto stub = quiver::v1::Collections::NewStub(std::shared_ptr<grpc::Channel>(ch, [](grpc::Channel*) {}));
  quiver::v1::CreateCollectionRequest req;
  req.mutable_config()->set_name(name);
  req.mutable_config()->set_dimension(dim);
  req.mutable_config()->set_metric(quiver::v1::L2);
  quiver::v1::CreateCollectionResponse resp;
  grpc::ClientContext ctx;
  auto st = stub->Create(&ctx, req, &resp);
  if (!st.ok()) std::fprintf(stderr, "create: %s\n", st.error_message().c_str());
  return st.ok();
}

quiver::v1::UpsertRequest MakeUpsert(const std::string& name, const float* data, uint64_t first_id, size_t count,
                                     size_t dim) {
  quiver::v1::UpsertRequest req;
  req.set_collection(name);
  for (size_t i = 0; i < count; ++i) {
    auto* p = req.add_points();
    p->set_id(first_id + i);
    p->mutable_vector()->Add(data + i * dim, data + (i + 1) * dim);
  }
  return req;
}

quiver::v1::CollectionInfo DescribeCollection(grpc::Channel* ch, const std::string& name) {
  auto stub = quiver::v1::Collections::NewStub(std::shared_ptr<grpc::Channel>(ch, [](grpc::Channel*) {}));
  quiver::v1::GetCollectionRequest req;
  req.set_name(name);
  quiver::v1::GetCollectionResponse resp;
  grpc::ClientContext ctx;
  if (!stub->Get(&ctx, req, &resp).ok()) return {};
  return resp.collection();
}

// Creates a collection with `config`; logs the error and returns false if refused.
bool CreateWithConfig(grpc::Channel* ch, const quiver::v1::CollectionConfig& config) {
  auto stub = quiver::v1::Collections::NewStub(std::shared_ptr<grpc::Channel>(ch, [](grpc::Channel*) {}));
  quiver::v1::CreateCollectionRequest req;
  *req.mutable_config() = config;
  quiver::v1::CreateCollectionResponse resp;
  grpc::ClientContext ctx;
  auto st = stub->Create(&ctx, req, &resp);
  if (!st.ok()) std::fprintf(stderr, "create %s: %s\n", config.name().c_str(), st.error_message().c_str());
  return st.ok();
}

// Upserts rows 0..n-1 of `data` as ids 0..n-1 in batches of 5,000;
// `decorate` (optional) adds a payload to each point.
bool UpsertAll(grpc::Channel* ch, const std::string& name, const float* data, size_t n, size_t dim,
               const std::function<void(quiver::v1::Point*)>& decorate = {}) {
  auto stub = quiver::v1::Points::NewStub(std::shared_ptr<grpc::Channel>(ch, [](grpc::Channel*) {}));
  for (size_t lo = 0; lo < n; lo += 5000) {
    auto req = MakeUpsert(name, data + lo * dim, lo, std::min<size_t>(5000, n - lo), dim);
    if (decorate) {
      for (auto& p : *req.mutable_points()) decorate(&p);
    }
    quiver::v1::UpsertResponse resp;
    grpc::ClientContext ctx;
    auto st = stub->Upsert(&ctx, req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "upsert %s: %s\n", name.c_str(), st.error_message().c_str());
      return false;
    }
  }
  return true;
}

// Polls until every sealed segment of the collection has its index built.
// Segments are sealed while the upsert applies, so after the upserts have
// returned the sealed count is final (and may be 0 for a small collection).
quiver::v1::CollectionInfo WaitForIndexes(grpc::Channel* ch, const std::string& name) {
  for (;;) {
    const auto info = DescribeCollection(ch, name);
    if (info.indexed_segments() == info.sealed_segments()) return info;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

struct Row {
  std::string method;
  double qps;
  double seconds;
  double recall;
};

void WriteResults(const std::string& stem, const std::string& title, const std::vector<Row>& rows,
                  const std::string& reference_method) {
  std::filesystem::create_directories("bench/results");
  double ref_qps = 0;
  for (const auto& r : rows) {
    if (r.method == reference_method) ref_qps = r.qps;
  }
  std::ofstream csv("bench/results/" + stem + ".csv");
  csv << "method,qps,median_seconds,recall_at_k,ratio_vs_" << reference_method << "\n";
  std::ofstream md("bench/results/" + stem + ".md");
  md << "### " << title << "\n\n| method | QPS (median) | seconds | recall@k | × " << reference_method << " |\n"
     << "|---|---:|---:|---:|---:|\n";
  std::printf("\n%s\n%-28s %12s %10s %9s %10s\n", title.c_str(), "method", "QPS", "seconds", "recall", "ratio");
  for (const auto& r : rows) {
    const double ratio = ref_qps > 0 ? r.qps / ref_qps : 0;
    csv << r.method << "," << r.qps << "," << r.seconds << "," << r.recall << "," << ratio << "\n";
    md << "| " << r.method << " | " << static_cast<long>(r.qps) << " | " << r.seconds << " | " << r.recall << " | "
       << ratio << " |\n";
    std::printf("%-28s %12.0f %10.4f %9.4f %10.2f\n", r.method.c_str(), r.qps, r.seconds, r.recall, ratio);
  }
}

int RunFlat(size_t n, size_t nq, size_t dim, size_t k, int threads, int repeats, bool with_grpc) {
  std::printf("flat: n=%zu nq=%zu dim=%zu k=%zu threads=%d repeats=%d; SIMD %s, BLAS core %s\n", n, nq, dim, k,
              threads, repeats, quiver::kernels::SimdLevelName(quiver::kernels::ActiveSimdLevel()),
              quiver::kernels::BlasCoreName().c_str());
  auto base = RandomData(n, dim, 1);
  auto queries = RandomData(nq, dim, 2);
  {
    std::filesystem::create_directories("bench/results");
    quiver::FloatMatrix b{n, dim, base}, q{nq, dim, queries};
    (void)quiver::WriteFvecs("bench/results/flat_base.fvecs", b);
    (void)quiver::WriteFvecs("bench/results/flat_queries.fvecs", q);
  }

  std::vector<float> norms(n);
  quiver::kernels::SquaredNorms(base.data(), n, dim, norms.data());
  faiss::IndexFlatL2 faiss_index(static_cast<int>(dim));
  faiss_index.add(static_cast<faiss::Index::idx_t>(n), base.data());

  std::unique_ptr<LocalServer> server;
  std::unique_ptr<quiver::v1::Points::Stub> points;
  quiver::v1::SearchBatchRequest batch_req;
  if (with_grpc) {
    server = std::make_unique<LocalServer>("/tmp/quiver-bench-flat", static_cast<uint32_t>(threads));
    if (!CreateCollection(server->channel.get(), "flat", static_cast<uint32_t>(dim))) return 1;
    points = quiver::v1::Points::NewStub(server->channel);
    if (!UpsertAll(server->channel.get(), "flat", base.data(), n, dim)) return 1;
    batch_req.set_collection("flat");
    batch_req.set_k(static_cast<uint32_t>(k));
    for (size_t i = 0; i < nq; ++i) {
      batch_req.add_queries()->mutable_values()->Add(queries.data() + i * dim, queries.data() + (i + 1) * dim);
    }
  }

  std::vector<int64_t> q_rows(nq * k), f_rows(nq * k);
  std::vector<float> q_scores(nq * k), f_scores(nq * k);
  std::vector<double> t_quiver, t_faiss, t_grpc;
  quiver::kernels::Resources res;
  res.num_threads = threads;
  omp_set_num_threads(threads);
  for (int r = 0; r < repeats + 1; ++r) {  // the first round warms caches and is dropped
    auto t0 = Clock::now();
    openblas_set_num_threads(1);  // our kernel parallelises around BLAS
    (void)quiver::kernels::FlatSearch(res, {base.data(), norms.data(), n, dim}, queries.data(), nq,
                                      {quiver::kernels::Metric::kL2, k}, q_rows.data(), q_scores.data());
    if (r > 0) t_quiver.push_back(Seconds(t0));

    openblas_set_num_threads(threads);  // FAISS calls sgemm from one thread: let BLAS use all
    t0 = Clock::now();
    faiss_index.search(static_cast<faiss::Index::idx_t>(nq), queries.data(), static_cast<faiss::Index::idx_t>(k),
                       f_scores.data(), f_rows.data());
    if (r > 0) t_faiss.push_back(Seconds(t0));
    openblas_set_num_threads(1);

    if (with_grpc) {
      quiver::v1::SearchBatchResponse resp;
      grpc::ClientContext ctx;
      t0 = Clock::now();
      auto st = points->SearchBatch(&ctx, batch_req, &resp);
      if (r > 0) t_grpc.push_back(Seconds(t0));
      if (!st.ok()) {
        std::fprintf(stderr, "SearchBatch: %s\n", st.error_message().c_str());
        return 1;
      }
    }
  }
  // Agreement with FAISS (exact search: should be 1.0 up to ties).
  size_t same = 0;
  for (size_t i = 0; i < nq; ++i) {
    for (size_t a = 0; a < k; ++a) {
      for (size_t b = 0; b < k; ++b) same += q_rows[i * k + a] == f_rows[i * k + b];
    }
  }
  const double agree = double(same) / double(nq * k);
  std::vector<Row> rows = {{"quiver in-process", nq / Median(t_quiver), Median(t_quiver), agree},
                           {"faiss IndexFlatL2 (Debian)", nq / Median(t_faiss), Median(t_faiss), 1.0}};
  if (with_grpc) rows.push_back({"quiver gRPC SearchBatch", nq / Median(t_grpc), Median(t_grpc), agree});
  char title[256];
  std::snprintf(title, sizeof title, "FLAT SearchBatch: %zu queries vs %zu x %zu random, k=%zu, %d threads", nq, n,
                dim, k, threads);
  WriteResults("flat", title, rows, "faiss IndexFlatL2 (Debian)");
  return 0;
}

// Dynamic batching: `clients` closed-loop clients, each on its own
// connection, send single-query Search calls for `seconds` to a server with
// batching off and then on (same data and index: FLAT, exact, unless
// `index` names another; sealed segments on the GPU unless `gpu` is off),
// interleaved `rounds` times. Reports QPS and the ratio per round.
int RunConcurrent(size_t n, size_t dim, size_t k, int threads, int clients, double seconds, int rounds,
                  uint32_t batch_wait_us, const std::string& index, const std::string& gpu) {
  std::printf("concurrent: n=%zu dim=%zu k=%zu, %s, %d single-query clients, %.1f s per run, %d rounds, batching "
              "wait %u us, %d search threads, gpu %s\n",
              n, dim, k, index.c_str(), clients, seconds, rounds, batch_wait_us, threads, gpu.c_str());
  const auto base = RandomData(n, dim, 1);
  const auto queries = RandomData(4096, dim, 2);
  quiver::v1::CollectionConfig config;
  config.set_name("c");
  config.set_dimension(static_cast<uint32_t>(dim));
  config.set_metric(quiver::v1::L2);
  config.mutable_index()->set_type(index == "ivf_flat" ? quiver::v1::IVF_FLAT
                                   : index == "ivf_pq" ? quiver::v1::IVF_PQ
                                   : index == "graph"  ? quiver::v1::GRAPH
                                                       : quiver::v1::FLAT);
  auto run = [&](uint32_t wait_us, double* qps) -> bool {
    LocalServer server("/tmp/quiver-bench-concurrent", static_cast<uint32_t>(threads), false, wait_us, gpu);
    if (!CreateWithConfig(server.channel.get(), config)) return false;
    if (!UpsertAll(server.channel.get(), "c", base.data(), n, dim)) return false;
    if (index != "flat") WaitForIndexes(server.channel.get(), "c");
    server.WaitForBackgroundWork();
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> done{0}, failed{0};
    std::vector<std::thread> pool;
    for (int c = 0; c < clients; ++c) {
      pool.emplace_back([&, c] {
        auto stub = quiver::v1::Points::NewStub(server.NewChannel(c + 1));
        quiver::v1::SearchRequest req;
        req.set_collection("c");
        req.set_k(static_cast<uint32_t>(k));
        for (size_t i = static_cast<size_t>(c); !stop.load(std::memory_order_relaxed); i += static_cast<size_t>(clients)) {
          const float* q = queries.data() + (i % 4096) * dim;
          req.mutable_vector()->Assign(q, q + dim);
          quiver::v1::SearchResponse resp;
          grpc::ClientContext ctx;
          const grpc::Status st = stub->Search(&ctx, req, &resp);
          if (st.ok()) {
            done.fetch_add(1, std::memory_order_relaxed);
          } else if (failed.fetch_add(1, std::memory_order_relaxed) == 0) {
            std::fprintf(stderr, "first failed search: %s\n", st.error_message().c_str());
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds / 4));  // warm-up, not counted
    const uint64_t start_done = done.load();
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    *qps = double(done.load() - start_done) / Seconds(t0);
    stop = true;
    for (auto& t : pool) t.join();
    if (failed.load() > 0) std::fprintf(stderr, "%llu searches failed\n", static_cast<unsigned long long>(failed.load()));
    return failed.load() == 0;
  };
  std::printf("\n| round | unbatched QPS | batched QPS | batched / unbatched |\n|---:|---:|---:|---:|\n");
  for (int r = 1; r <= rounds; ++r) {
    double off = 0, on = 0;
    if (!run(0, &off) || !run(batch_wait_us, &on)) return 1;
    std::printf("| %d | %.0f | %.0f | %.2f |\n", r, off, on, on / off);
    std::fflush(stdout);
  }
  return 0;
}

// Per nprobe: seconds per pass over the query set through gRPC (median), the
// in-process ÷ gRPC time of passes run back to back (median over rounds: the
// machine's noise drifts, so only paired passes compare), and the ids the
// server returned in the last pass (nq x k, -1 where it had fewer), so the
// server's recall is measured, not assumed.
struct GrpcSweep {
  std::vector<double> seconds;
  std::vector<double> paired_ratio;
  std::vector<std::vector<int64_t>> ids;
};

// Serves `base` from a one-segment IVF_FLAT collection of a local quiverd and
// times SearchBatch calls of `batch` queries from `clients` clients; each
// round's gRPC pass is followed by `in_process(nprobe)`, the same queries in
// process, timed. A pass sends the query set as many times as it takes to
// last about kMinGrpcPassSeconds (measured in the warm-up round, at most 20
// times), and its in-process partner runs as many: the ratio is a service's
// under steady load, not that of a burst of a few calls, whose first and
// last calls find the server idle or half busy (1,000 queries are 10 calls,
// 5 per client; at 1M x 128, nprobe 1, the paired ratio read 0.74 with
// passes of 10 calls and 0.87 with passes of 100). Empty on failure.
GrpcSweep GrpcIvfSweep(const std::vector<float>& base, const std::vector<float>& queries, size_t n, size_t nq,
                       size_t dim, size_t k, size_t nlist, int threads, int repeats, size_t batch, size_t clients,
                       const std::vector<size_t>& nprobes, const std::function<void(size_t nprobe)>& in_process) {
  LocalServer server("/tmp/quiver-bench-ivf", static_cast<uint32_t>(threads));
  quiver::v1::CollectionConfig config;
  config.set_name("ivf");
  config.set_dimension(static_cast<uint32_t>(dim));
  config.set_metric(quiver::v1::L2);
  config.set_segment_max_points(static_cast<uint32_t>(n));  // one sealed segment
  config.mutable_index()->set_type(quiver::v1::IVF_FLAT);
  config.mutable_index()->mutable_ivf_flat()->set_nlist(static_cast<uint32_t>(nlist));
  if (!CreateWithConfig(server.channel.get(), config) || !UpsertAll(server.channel.get(), "ivf", base.data(), n, dim)) {
    return {};
  }
  WaitForIndexes(server.channel.get(), "ivf");
  server.WaitForBackgroundWork();
  // Each client has its own connection and sends its batches one after the
  // other, as separate pipeline workers would.
  std::vector<std::unique_ptr<quiver::v1::Points::Stub>> stubs;
  for (size_t c = 0; c < clients; ++c) stubs.push_back(quiver::v1::Points::NewStub(server.NewChannel(int(c) + 1)));
  GrpcSweep out;
  constexpr double kMinGrpcPassSeconds = 0.3;
  const size_t calls_per_set = (nq + batch - 1) / batch;
  for (size_t nprobe : nprobes) {
    std::vector<double> times, ratios;
    std::vector<int64_t> got(nq * k, -1);
    size_t sets = 1;  // query sets per pass, from the warm-up round
    for (int r = 0; r < repeats + 1; ++r) {
      std::atomic<size_t> next_call{0};
      std::atomic<bool> failed{false};
      const auto t0 = Clock::now();
      std::vector<std::thread> workers;
      for (size_t c = 0; c < clients; ++c) {
        workers.emplace_back([&, c] {
          for (size_t call = next_call++; call < sets * calls_per_set; call = next_call++) {
            const size_t lo = (call % calls_per_set) * batch;
            quiver::v1::SearchBatchRequest req;
            req.set_collection("ivf");
            req.set_k(static_cast<uint32_t>(k));
            req.mutable_params()->set_nprobe(static_cast<uint32_t>(nprobe));
            for (size_t i = lo; i < std::min(nq, lo + batch); ++i) {
              req.add_queries()->mutable_values()->Add(queries.data() + i * dim, queries.data() + (i + 1) * dim);
            }
            quiver::v1::SearchBatchResponse resp;
            grpc::ClientContext ctx;
            if (!stubs[c]->SearchBatch(&ctx, req, &resp).ok() || resp.results_size() != req.queries_size()) {
              failed = true;
              continue;
            }
            for (int i = 0; i < resp.results_size(); ++i) {
              const auto& hits = resp.results(i).hits();
              for (int j = 0; j < hits.size() && size_t(j) < k; ++j) got[(lo + size_t(i)) * k + size_t(j)] = int64_t(hits[j].id());
            }
          }
        });
      }
      for (auto& w : workers) w.join();
      if (failed) return {};
      const double grpc_seconds = Seconds(t0);
      const auto t1 = Clock::now();
      for (size_t set = 0; set < sets; ++set) in_process(nprobe);
      if (r > 0) {
        times.push_back(grpc_seconds / double(sets));
        ratios.push_back(Seconds(t1) / grpc_seconds);
      } else {
        sets = std::clamp<size_t>(static_cast<size_t>(std::ceil(kMinGrpcPassSeconds / grpc_seconds)), 1, 20);
      }
    }
    out.seconds.push_back(Median(times));
    out.paired_ratio.push_back(Median(ratios));
    out.ids.push_back(std::move(got));
  }
  return out;
}

// One method's build in a sweep.
struct MethodBuild {
  std::string method;
  double seconds = 0;
  double memory_mib = 0;  // index bytes (Quiver), else resident-memory growth during the build
};

size_t ResidentBytes() {
  std::ifstream f("/proc/self/statm");
  size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

double PeakResidentMib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

using SearchFn = std::function<void(const float* queries, size_t count, int64_t* rows)>;

// One method at one setting, for MeasureInTurns.
struct Contender {
  std::string method, param;
  SearchFn search;
};

// QPS over all queries in one call (median of `repeats` after a warm-up) and
// single-query latency percentiles over the first 200 queries, for each
// contender. The contenders take turns in every round (the order reversed
// from round to round), so a slow stretch of a shared machine falls on all
// of them instead of on whichever ran then.
std::vector<SweepPoint> MeasureInTurns(const std::vector<Contender>& contenders, const std::vector<float>& queries,
                                       size_t nq, size_t dim, size_t k, int repeats,
                                       const std::vector<int64_t>& truth) {
  const size_t m = contenders.size();
  std::vector<std::vector<int64_t>> rows(m, std::vector<int64_t>(nq * k));
  std::vector<std::vector<double>> times(m);
  for (int r = 0; r < repeats + 1; ++r) {
    for (size_t turn = 0; turn < m; ++turn) {
      const size_t c = r % 2 == 0 ? turn : m - 1 - turn;
      const auto t0 = Clock::now();
      contenders[c].search(queries.data(), nq, rows[c].data());
      if (r > 0) times[c].push_back(Seconds(t0));
    }
  }
  std::vector<SweepPoint> points;
  for (size_t c = 0; c < m; ++c) {
    SweepPoint p{contenders[c].method, contenders[c].param};
    p.recall = RecallAtK(rows[c], truth, nq, k);
    p.qps = double(nq) / Median(times[c]);
    std::vector<double> lat;
    for (size_t q = 0; q < std::min<size_t>(nq, 200); ++q) {
      const auto t0 = Clock::now();
      contenders[c].search(queries.data() + q * dim, 1, rows[c].data());
      lat.push_back(Seconds(t0) * 1e3);
    }
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double f) { return lat[std::min(lat.size() - 1, static_cast<size_t>(f * double(lat.size())))]; };
    p.p50_ms = pct(0.50);
    p.p95_ms = pct(0.95);
    p.p99_ms = pct(0.99);
    std::printf("%-28s %-12s recall %.4f  QPS %9.0f  p50 %.3f ms  p99 %.3f ms\n", p.method.c_str(), p.param.c_str(),
                p.recall, p.qps, p.p50_ms, p.p99_ms);
    points.push_back(std::move(p));
  }
  return points;
}

// `reference`: the method the last column divides by the others.
void WriteSweep(const std::string& stem, size_t n, size_t dim, size_t k, int threads, const std::string& reference,
                const std::vector<MethodBuild>& builds, const std::vector<SweepPoint>& points) {
  std::filesystem::create_directories("bench/results");
  std::ofstream csv("bench/results/" + stem + ".csv");
  csv << "method,param,recall_at_k,qps,p50_ms,p95_ms,p99_ms\n";
  for (const auto& p : points) {
    csv << p.method << "," << p.param << "," << p.recall << "," << p.qps << "," << p.p50_ms << "," << p.p95_ms << ","
        << p.p99_ms << "\n";
  }
  std::ofstream md("bench/results/" + stem + ".md");
  md << "### ANN sweep: n=" << n << ", dim=" << dim << ", k=" << k << ", " << threads << " threads\n\n"
     << "| method | build s | memory MiB | QPS @ recall 0.90 | @ 0.95 | @ 0.99 | " << reference
     << " × @ 0.95 | × @ 0.99 |\n"
     << "|---|---:|---:|---:|---:|---:|---:|---:|\n";
  std::printf("\n%-28s %8s %10s %10s %10s %10s %10s %10s\n", "method", "build s", "mem MiB", "QPS@.90", "QPS@.95",
              "QPS@.99", "ref/m@.95", "ref/m@.99");
  const double ref95 = QpsAtRecall(points, reference, 0.95), ref99 = QpsAtRecall(points, reference, 0.99);
  std::vector<std::string> methods;
  for (const auto& p : points) {
    if (std::find(methods.begin(), methods.end(), p.method) == methods.end()) methods.push_back(p.method);
  }
  for (const auto& m : methods) {
    double build_s = 0, mem = 0;
    for (const auto& b : builds) {
      if (b.method == m) build_s = b.seconds, mem = b.memory_mib;
    }
    const double q90 = QpsAtRecall(points, m, 0.90), q95 = QpsAtRecall(points, m, 0.95),
                 q99 = QpsAtRecall(points, m, 0.99);
    const double ratio95 = q95 > 0 ? ref95 / q95 : 0, ratio99 = q99 > 0 ? ref99 / q99 : 0;
    md << "| " << m << " | " << build_s << " | " << mem << " | " << long(q90) << " | " << long(q95) << " | "
       << long(q99) << " | " << ratio95 << " | " << ratio99 << " |\n";
    std::printf("%-28s %8.2f %10.1f %10.0f %10.0f %10.0f %10.2f %10.2f\n", m.c_str(), build_s, mem, q90, q95, q99,
                ratio95, ratio99);
  }
  md << "\nQPS at a recall: log QPS interpolated in recall between the two nearest points of the method's "
        "recall/QPS frontier.\n";
  md << "\nPeak resident memory of the whole run: " << long(PeakResidentMib()) << " MiB. Per-point data: " << stem
     << ".csv (p50/p95/p99 are single-query latencies).\n";
  std::printf("peak resident memory %.0f MiB; results in bench/results/%s.{csv,md}\n", PeakResidentMib(),
              stem.c_str());
}

int RunIvf(size_t n, size_t nq, size_t dim, size_t k, size_t nlist, size_t clusters, int threads, int repeats,
           bool with_grpc, size_t grpc_clients, bool with_hnsw, const std::string& hdf5) {
  std::vector<float> base, queries;
  std::vector<int64_t> file_truth;  // from the file's "neighbors", when it has k of them
  if (!hdf5.empty()) {
    auto d = quiver::bench::ReadAnnBenchmarksHdf5(hdf5);
    if (!d.ok()) {
      std::fprintf(stderr, "%s\n", d.status().ToString().c_str());
      return 2;
    }
    if (!d->distance.empty() && d->distance != "euclidean") {
      std::fprintf(stderr, "%s: distance '%s' not supported by this benchmark yet (euclidean only)\n", hdf5.c_str(),
                   d->distance.c_str());
      return 2;
    }
    n = d->train.rows;
    dim = d->train.cols;
    nq = std::min(nq, d->test.rows);
    base = std::move(d->train.data);
    queries.assign(d->test.data.begin(), d->test.data.begin() + long(nq * dim));
    if (d->neighbors.cols >= k) {
      for (size_t i = 0; i < nq; ++i) {
        for (size_t j = 0; j < k; ++j) file_truth.push_back(d->neighbors.data[i * d->neighbors.cols + j]);
      }
    }
  } else {
    std::tie(base, queries) = quiver::bench::MixtureBaseAndQueries(n, nq, dim, clusters);
  }
  {
    quiver::FloatMatrix b{n, dim, base}, q{nq, dim, queries};
    std::filesystem::create_directories("bench/results");
    (void)quiver::WriteFvecs("bench/results/ivf_base.fvecs", b);
    (void)quiver::WriteFvecs("bench/results/ivf_queries.fvecs", q);
  }
  std::printf("ivf: n=%zu nq=%zu dim=%zu k=%zu nlist=%zu clusters=%zu threads=%d; SIMD %s\n", n, nq, dim, k, nlist,
              clusters, threads, quiver::kernels::SimdLevelName(quiver::kernels::ActiveSimdLevel()));
  quiver::kernels::Resources res;
  res.num_threads = threads;
  omp_set_num_threads(threads);
  openblas_set_num_threads(1);

  std::vector<float> norms(n);
  quiver::kernels::SquaredNorms(base.data(), n, dim, norms.data());
  std::vector<int64_t> truth(nq * k);
  std::vector<float> tscores(nq * k);
  if (!file_truth.empty()) {
    truth = file_truth;
  } else {
    (void)quiver::kernels::FlatSearch(res, {base.data(), norms.data(), n, dim}, queries.data(), nq,
                                      {quiver::kernels::Metric::kL2, k}, truth.data(), tscores.data());
  }

  quiver::kernels::IvfFlatBuildParams params;
  params.nlist = static_cast<uint32_t>(nlist);
  auto t0 = Clock::now();
  auto index = quiver::kernels::IvfFlatIndex::Build(res, quiver::kernels::Metric::kL2, base.data(), n, dim, params);
  const double quiver_build = Seconds(t0);
  if (!index.ok()) {
    std::fprintf(stderr, "build: %s\n", index.status().ToString().c_str());
    return 1;
  }
  // FAISS trains on the same number of points (nlist * 64), then adds all.
  faiss::IndexFlatL2 quantizer(static_cast<int>(dim));
  faiss::IndexIVFFlat faiss_ivf(&quantizer, dim, nlist);
  faiss_ivf.cp.niter = 20;
  faiss_ivf.cp.max_points_per_centroid = 64;
  openblas_set_num_threads(threads);
  t0 = Clock::now();
  faiss_ivf.train(static_cast<faiss::Index::idx_t>(n), base.data());
  faiss_ivf.add(static_cast<faiss::Index::idx_t>(n), base.data());
  const double faiss_build = Seconds(t0);
  openblas_set_num_threads(1);
  std::printf("build: quiver %.2f s, faiss IndexIVFFlat (Debian) %.2f s\n", quiver_build, faiss_build);

  // Every method's sweep, written together: bench/results/ann.{csv,md}
  // (bench/plot_ann.py draws recall against QPS from the CSV).
  std::vector<SweepPoint> points;
  std::vector<MethodBuild> builds = {{"quiver IVF_FLAT", quiver_build, (*index)->MemoryBytes() / 1048576.0},
                                     {"faiss IVFFlat (Debian)", faiss_build,
                                      double(n * (dim * sizeof(float) + sizeof(int64_t)) + nlist * dim * sizeof(float)) /
                                          1048576.0}};
  std::vector<size_t> nprobes;
  for (size_t p : {1, 2, 4, 8, 16, 32, 64, 128}) {
    if (p <= nlist) nprobes.push_back(p);
  }
  GrpcSweep grpc;
  if (with_grpc) {
    // Paired with each gRPC pass: the same batches of 100 in process.
    auto in_process = [&](size_t nprobe) {
      std::vector<int64_t> r(nq * k);
      std::vector<float> s(nq * k);
      for (size_t lo = 0; lo < nq; lo += 100) {
        (void)(*index)->Search(res, queries.data() + lo * dim, std::min<size_t>(100, nq - lo), k,
                               static_cast<uint32_t>(nprobe), nullptr, r.data() + lo * k, s.data() + lo * k);
      }
    };
    grpc = GrpcIvfSweep(base, queries, n, nq, dim, k, nlist, threads, repeats, 100, grpc_clients, nprobes, in_process);
    if (grpc.seconds.empty()) {
      std::fprintf(stderr, "gRPC measurement failed\n");
      return 1;
    }
  }
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  for (size_t pi = 0; pi < nprobes.size(); ++pi) {
    const auto nprobe = static_cast<uint32_t>(nprobes[pi]);
    auto quiver_search = [&](const float* q, size_t count, int64_t* out) {
      (void)(*index)->Search(res, q, count, k, nprobe, nullptr, out, scores.data());
    };
    faiss_ivf.nprobe = nprobe;
    auto faiss_search = [&](const float* q, size_t count, int64_t* out) {
      openblas_set_num_threads(threads);
      faiss_ivf.search(static_cast<faiss::Index::idx_t>(count), q, static_cast<faiss::Index::idx_t>(k), scores.data(), out);
      openblas_set_num_threads(1);
    };
    // The same batches of 100 in process: what the gRPC path should approach.
    auto quiver_batched = [&](const float* q, size_t count, int64_t* out) {
      for (size_t lo = 0; lo < count; lo += 100) {
        (void)(*index)->Search(res, q + lo * dim, std::min<size_t>(100, count - lo), k, nprobe, nullptr, out + lo * k,
                               scores.data());
      }
    };
    // Timed in turns per sweep point, so noise hits them alike.
    const std::string param = "nprobe=" + std::to_string(nprobe);
    std::vector<Contender> contenders = {{"quiver IVF_FLAT", param, quiver_search},
                                         {"faiss IVFFlat (Debian)", param, faiss_search}};
    if (with_grpc) contenders.push_back({"quiver IVF_FLAT (batches of 100)", param, quiver_batched});
    for (auto& p : MeasureInTurns(contenders, queries, nq, dim, k, repeats, truth)) points.push_back(std::move(p));
    if (with_grpc) {
      SweepPoint g = points[points.size() - 3];
      g.method = "quiver IVF_FLAT via gRPC";
      g.qps = double(nq) / grpc.seconds[pi];
      g.recall = RecallAtK(grpc.ids[pi], truth, nq, k);  // ids are the base rows
      g.p50_ms = g.p95_ms = g.p99_ms = 0;  // batches of 100: no per-query latency
      std::printf("%-28s %-12s recall %.4f  QPS %9.0f  (SearchBatch of 100, %zu clients; paired with in-process "
                  "batches of 100: %.2f; of the one-call in-process QPS above: %.2f)\n",
                  g.method.c_str(), g.param.c_str(), g.recall, g.qps, grpc_clients, grpc.paired_ratio[pi],
                  g.qps / points[points.size() - 3].qps);
      points.push_back(g);
    }
  }
  if (with_hnsw) {
    const size_t m = 32, ef_construction = 200;
    const std::vector<size_t> efs = {10, 16, 32, 64, 128, 256};
    auto t0 = Clock::now();
    size_t rss0 = ResidentBytes();
    quiver::bench::Hnswlib hnsw(base.data(), n, dim, m, ef_construction, threads);
    builds.push_back({std::string("hnswlib (") + quiver::bench::Hnswlib::SimdName() + ")", Seconds(t0),
                      double(ResidentBytes() - std::min(rss0, ResidentBytes())) / 1048576.0});
    std::printf("build: hnswlib M=%zu efC=%zu %.2f s\n", m, ef_construction, builds.back().seconds);
    t0 = Clock::now();
    rss0 = ResidentBytes();
    faiss::IndexHNSWFlat faiss_hnsw(static_cast<int>(dim), static_cast<int>(m));
    faiss_hnsw.hnsw.efConstruction = static_cast<int>(ef_construction);
    faiss_hnsw.add(static_cast<faiss::Index::idx_t>(n), base.data());
    builds.push_back({"faiss HNSWFlat (Debian)", Seconds(t0), double(ResidentBytes() - std::min(rss0, ResidentBytes())) / 1048576.0});
    std::printf("build: faiss IndexHNSWFlat M=%zu efC=%zu %.2f s\n", m, ef_construction, builds.back().seconds);
    for (size_t ef : efs) {
      auto hnswlib_search = [&](const float* q, size_t count, int64_t* out) { hnsw.Search(q, count, k, ef, threads, out); };
      faiss_hnsw.hnsw.efSearch = static_cast<int>(std::max(ef, k));
      auto faiss_search = [&](const float* q, size_t count, int64_t* out) {
        faiss_hnsw.search(static_cast<faiss::Index::idx_t>(count), q, static_cast<faiss::Index::idx_t>(k), scores.data(), out);
      };
      const std::string param = "ef=" + std::to_string(ef);
      for (auto& p : MeasureInTurns({{builds[builds.size() - 2].method, param, hnswlib_search},
                                     {"faiss HNSWFlat (Debian)", param, faiss_search}},
                                    queries, nq, dim, k, repeats, truth)) {
        points.push_back(std::move(p));
      }
    }
  }
  WriteSweep("ann", n, dim, k, threads, "quiver IVF_FLAT", builds, points);
  return 0;
}

// A Gaussian-mixture base and query set (unit vectors for IP) with exact
// ground truth, for the modes that compare kernels in process. Also sets
// the thread counts of OpenMP (ours) and OpenBLAS (single: we parallelise
// around it).
struct SyntheticSet {
  std::vector<float> base, queries, norms;
  std::vector<int64_t> truth;
};
SyntheticSet MakeSyntheticSet(const quiver::kernels::Resources& res, size_t n, size_t nq, size_t dim, size_t k,
                              size_t clusters, quiver::kernels::Metric metric) {
  omp_set_num_threads(res.num_threads);
  openblas_set_num_threads(1);
  SyntheticSet set;
  std::tie(set.base, set.queries) =
      quiver::bench::MixtureBaseAndQueries(n, nq, dim, clusters, /*unit=*/metric != quiver::kernels::Metric::kL2);
  set.norms.resize(n);
  quiver::kernels::SquaredNorms(set.base.data(), n, dim, set.norms.data());
  set.truth.resize(nq * k);
  std::vector<float> scores(nq * k);
  (void)quiver::kernels::FlatSearch(res, {set.base.data(), set.norms.data(), n, dim}, set.queries.data(), nq,
                                    {metric, k}, set.truth.data(), scores.data());
  return set;
}

// GRAPH against hnswlib (M=32, ef_construction=200, -march=native) on the same
// data, same threads, the two taking turns in every timing round.
// `index_file`: where a built GRAPH index is kept between runs of the same
// data and settings (not kept when empty).
int RunGraph(size_t n, size_t nq, size_t dim, size_t k, size_t clusters, int threads, int repeats,
             const std::string& metric_name, uint32_t degree, bool with_hnsw, const std::string& index_file) {
  using quiver::kernels::Metric;
  const bool ip = metric_name == "ip";
  if (!ip && metric_name != "l2") {
    std::fprintf(stderr, "--metric must be l2 or ip\n");
    return 2;
  }
  const Metric metric = ip ? Metric::kInnerProduct : Metric::kL2;
  std::printf("graph: n=%zu nq=%zu dim=%zu k=%zu metric=%s degree=%u threads=%d; SIMD %s\n", n, nq, dim, k,
              metric_name.c_str(), degree, threads, quiver::kernels::SimdLevelName(quiver::kernels::ActiveSimdLevel()));
  quiver::kernels::Resources res;
  res.num_threads = threads;
  const SyntheticSet set = MakeSyntheticSet(res, n, nq, dim, k, clusters, metric);
  const auto& [base, queries, norms, truth] = set;
  std::vector<float> scores(nq * k);

  auto t0 = Clock::now();
  quiver::Result<std::unique_ptr<quiver::kernels::GraphIndex>> index = quiver::Status::NotFound("not built");
  const bool load = !index_file.empty() && std::filesystem::exists(index_file);
  if (load) {
    std::ifstream f(index_file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    index = quiver::kernels::GraphIndex::Deserialize(bytes, index_file);
    if (index.ok() && ((*index)->size() != n || (*index)->dim() != dim || (*index)->metric() != metric ||
                       (*index)->degree() != degree)) {
      index = quiver::Status::InvalidArgument(index_file + " holds an index of other data or settings");
    }
  } else {
    index = quiver::kernels::GraphIndex::Build(res, metric, base.data(), n, dim, {.degree = degree});
  }
  const double quiver_build = Seconds(t0);
  if (!index.ok()) {
    std::fprintf(stderr, "build: %s\n", index.status().ToString().c_str());
    return 1;
  }
  if (!load && !index_file.empty()) {
    std::ofstream(index_file, std::ios::binary) << (*index)->Serialize();
  }
  std::printf("build: quiver GRAPH %.2f s%s\n", quiver_build, load ? " (loaded from the index file: not a build time)" : "");
  // A loaded index has no build time (0 in the table).
  std::vector<MethodBuild> builds = {{"quiver GRAPH", load ? 0.0 : quiver_build, (*index)->MemoryBytes() / 1048576.0}};
  std::unique_ptr<quiver::bench::Hnswlib> hnsw;
  const std::string hnsw_name = std::string("hnswlib (") + quiver::bench::Hnswlib::SimdName() + ")";
  if (with_hnsw) {
    t0 = Clock::now();
    const size_t rss0 = ResidentBytes();
    hnsw = std::make_unique<quiver::bench::Hnswlib>(base.data(), n, dim, 32, 200, threads, ip);
    builds.push_back({hnsw_name, Seconds(t0), double(ResidentBytes() - std::min(rss0, ResidentBytes())) / 1048576.0});
    if (load) {
      std::printf("build: hnswlib M=32 efC=200 %.2f s\n", builds.back().seconds);
    } else {
      std::printf("build: hnswlib M=32 efC=200 %.2f s (quiver/hnswlib build time %.2f)\n", builds.back().seconds,
                  quiver_build / builds.back().seconds);
    }
  }
  const quiver::kernels::BaseView view{base.data(), norms.data(), n, dim, nullptr};
  // Fine steps where the 0.95 and 0.99 points of both methods lie.
  const size_t beams[] = {10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128, 192, 256, 384};
  std::vector<SweepPoint> points;
  for (size_t beam : beams) {
    if (beam < k) continue;
    std::vector<Contender> contenders = {
        {"quiver GRAPH", "itopk=" + std::to_string(beam), [&, beam](const float* q, size_t count, int64_t* out) {
           (void)(*index)->Search(res, view, q, count, k, {.itopk = static_cast<uint32_t>(beam)}, out, scores.data());
         }}};
    if (hnsw != nullptr) {
      contenders.push_back({hnsw_name, "ef=" + std::to_string(beam), [&, beam](const float* q, size_t count, int64_t* out) {
                              hnsw->Search(q, count, k, beam, threads, out);
                            }});
    }
    for (auto& p : MeasureInTurns(contenders, queries, nq, dim, k, repeats, truth)) points.push_back(std::move(p));
  }
  WriteSweep("graph_" + metric_name, n, dim, k, threads, "quiver GRAPH", builds, points);
  return 0;
}

// IVF_PQ against IVF_FLAT (same nlist, same data, same run): recall with
// exact re-ranking, QPS, and index memory per vector.
int RunPq(size_t n, size_t nq, size_t dim, size_t k, size_t nlist, size_t clusters, int threads, int repeats,
          const std::string& metric_name, uint32_t pq_dim, uint32_t pq_bits, uint32_t refine) {
  using quiver::kernels::Metric;
  const bool ip = metric_name == "ip";
  const Metric metric = ip ? Metric::kInnerProduct : Metric::kL2;
  std::printf("pq: n=%zu nq=%zu dim=%zu k=%zu metric=%s nlist=%zu pq_dim=%u pq_bits=%u refine=%u threads=%d\n", n, nq,
              dim, k, metric_name.c_str(), nlist, pq_dim, pq_bits, refine, threads);
  quiver::kernels::Resources res;
  res.num_threads = threads;
  const SyntheticSet set = MakeSyntheticSet(res, n, nq, dim, k, clusters, metric);
  const auto& [base, queries, norms, truth] = set;
  std::vector<float> scores(nq * k);
  auto t0 = Clock::now();
  auto pq = quiver::kernels::IvfPqIndex::Build(res, metric, base.data(), n, dim,
                                               {.nlist = static_cast<uint32_t>(nlist), .pq_dim = pq_dim, .pq_bits = pq_bits});
  const double pq_build = Seconds(t0);
  t0 = Clock::now();
  auto flat = quiver::kernels::IvfFlatIndex::Build(res, metric, base.data(), n, dim, {.nlist = static_cast<uint32_t>(nlist)});
  const double flat_build = Seconds(t0);
  if (!pq.ok() || !flat.ok()) {
    std::fprintf(stderr, "build: %s %s\n", pq.status().ToString().c_str(), flat.status().ToString().c_str());
    return 1;
  }
  const double pq_bytes = double((*pq)->MemoryBytes()) / double(n), flat_bytes = double((*flat)->MemoryBytes()) / double(n);
  std::printf("build: IVF_PQ %.2f s, IVF_FLAT %.2f s; index bytes per vector: IVF_PQ %.1f, IVF_FLAT %.1f (%.3f)\n",
              pq_build, flat_build, pq_bytes, flat_bytes, pq_bytes / flat_bytes);
  std::vector<MethodBuild> builds = {{"quiver IVF_PQ", pq_build, (*pq)->MemoryBytes() / 1048576.0},
                                     {"quiver IVF_FLAT", flat_build, (*flat)->MemoryBytes() / 1048576.0}};
  const quiver::kernels::BaseView view{base.data(), norms.data(), n, dim, nullptr};
  std::vector<SweepPoint> points;
  for (size_t p : {1, 2, 4, 8, 16, 32, 64, 128}) {
    if (p > nlist) break;
    const quiver::kernels::IndexSearchParams params{.nprobe = static_cast<uint32_t>(p), .refine_factor = refine};
    auto pq_search = [&](const float* q, size_t count, int64_t* out) {
      (void)(*pq)->Search(res, view, q, count, k, params, out, scores.data());
    };
    auto flat_search = [&](const float* q, size_t count, int64_t* out) {
      (void)(*flat)->Search(res, view, q, count, k, params, out, scores.data());
    };
    const std::string param = "nprobe=" + std::to_string(p);
    for (auto& point : MeasureInTurns({{"quiver IVF_PQ", param, pq_search}, {"quiver IVF_FLAT", param, flat_search}},
                                      queries, nq, dim, k, repeats, truth)) {
      points.push_back(std::move(point));
    }
  }
  WriteSweep("pq_" + metric_name, n, dim, k, threads, "quiver IVF_PQ", builds, points);
  return 0;
}

std::shared_ptr<grpc::Channel> ChannelTo(const std::string& address, int client) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(1 << 30);
  args.SetMaxSendMessageSize(1 << 30);
  args.SetInt("quiver.bench_client", client);  // its own connection
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

struct UpsertRun {
  double seconds = 0;
  size_t vectors = 0;     // acknowledged
  size_t failed = 0;      // calls
  double client_cpu = 0;  // CPU seconds of this process while timed: the clients (and an in-process server)
  double busy_cores = 0;  // the whole machine's CPU seconds while timed, per second

  double VectorsPerSecond() const { return double(vectors) / seconds; }
};

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// CPU seconds the whole machine has spent busy: every time column of
// /proc/stat's first line but idle and iowait (0 where there is no /proc).
// Per second of a run it says how many cores the run kept busy: whether the
// servers and clients were bound by the cores or waited (on fsync, on each
// other) with cores to spare.
double MachineBusyCpuSeconds() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  f >> cpu;
  double busy = 0, ticks = 0;
  for (int column = 0; column < 8 && f >> ticks; ++column) {
    if (column != 3 && column != 4) busy += ticks;  // user nice system [idle iowait] irq softirq steal
  }
  return busy / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Durable Upserts into "ingest": `clients` writers, each on its own
// connection like separate pipeline workers, spread over `targets`.
UpsertRun TimeUpserts(const std::vector<std::string>& targets, size_t clients, size_t batch, size_t dim, size_t total) {
  auto data = RandomData(batch * 8, dim, 3);  // reused rows, distinct ids
  const size_t batches = total / batch;
  std::atomic<size_t> next{0}, failed{0};
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  const double cpu0 = ProcessCpuSeconds();
  const double busy0 = MachineBusyCpuSeconds();
  for (size_t c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = quiver::v1::Points::NewStub(ChannelTo(targets[c % targets.size()], static_cast<int>(c) + 1));
      // One request per client, refilled in place: building 1,000 Point
      // messages per call took a fifth of a single node's CPU from the cores
      // the clients share with the nodes (more of it beside three nodes).
      // Requests built in advance instead cost the nodes more: freeing
      // 200 MB between phases made their next pages slow to fault in.
      quiver::v1::UpsertRequest req = MakeUpsert("ingest", data.data(), 0, batch, dim);
      for (size_t b = next++; b < batches; b = next++) {
        const float* rows = data.data() + (b % 8) * batch * dim;
        for (size_t i = 0; i < batch; ++i) {
          auto* p = req.mutable_points(static_cast<int>(i));
          p->set_id(b * batch + i);
          std::copy(rows + i * dim, rows + (i + 1) * dim, p->mutable_vector()->mutable_data());
        }
        quiver::v1::UpsertResponse resp;
        grpc::ClientContext ctx;
        if (!stub->Upsert(&ctx, req, &resp).ok()) ++failed;
      }
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = Seconds(t0);
  return {seconds, (batches - failed.load()) * batch, failed.load(), ProcessCpuSeconds() - cpu0,
          (MachineBusyCpuSeconds() - busy0) / seconds};
}

int RunUpsert(size_t clients, size_t batch, size_t dim, size_t total) {
  LocalServer server("/tmp/quiver-bench-upsert", 0);
  if (!CreateCollection(server.channel.get(), "ingest", static_cast<uint32_t>(dim))) return 1;
  const UpsertRun run = TimeUpserts({server.address()}, clients, batch, dim, total);
  const double vps = run.VectorsPerSecond();
  std::printf("\nDurable Upsert: %zu clients, batches of %zu x %zu-d, %zu vectors: %.0f vectors/s (%.2f s, %zu failed)\n",
              clients, batch, dim, run.vectors, vps, run.seconds, run.failed);
  std::filesystem::create_directories("bench/results");
  std::ofstream("bench/results/upsert.csv") << "clients,batch,dim,vectors,seconds,vectors_per_s,failed\n"
                                            << clients << "," << batch << "," << dim << "," << run.vectors << ","
                                            << run.seconds << "," << vps << "," << run.failed << "\n";
  return run.failed == 0 ? 0 : 1;
}

// ---------------------------------------------------------------- cluster

// A quiverd child process: the cluster benchmark kills leaders with SIGKILL.
class QuiverdChild {
 public:
  QuiverdChild(std::string quiverd, std::string work, std::vector<std::string> flags)
      : quiverd_(std::move(quiverd)), work_(std::move(work)), flags_(std::move(flags)) {
    std::filesystem::create_directories(work_);
  }
  ~QuiverdChild() { Kill(SIGKILL); }

  // Starts it and waits (30 s at most) until it serves; false if it did not.
  bool Start() {
    const std::string ready = work_ + "/ready-" + std::to_string(++starts_) + ".json";
    std::vector<std::string> args = {quiverd_, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                                     "--data-dir", work_ + "/data", "--ready-file", ready, "--log-level", "warn",
                                     "--max-message-bytes", "1073741824"};
    args.insert(args.end(), flags_.begin(), flags_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = work_ + "/quiverd.log";
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fd);
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
      std::ifstream f(ready);
      std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (auto p = s.find("\"grpc_port\": "); p != std::string::npos) {
        grpc_port_ = std::atoi(s.c_str() + p + 13);
        return true;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  void Kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  void Wipe() { std::filesystem::remove_all(work_ + "/data"); }
  // CPU seconds (user + system, all threads) the running process has used:
  // /proc/<pid>/stat fields 14 and 15, after the parenthesised name.
  double CpuSeconds() const {
    if (pid_ <= 0) return 0;
    std::ifstream f("/proc/" + std::to_string(pid_) + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const auto close = s.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(s.substr(close + 2));
    std::string field;
    double ticks = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i >= 14) ticks += std::stod(field);
    }
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }

 private:
  std::string quiverd_, work_;
  std::vector<std::string> flags_;
  pid_t pid_ = -1;
  int starts_ = 0;
  int grpc_port_ = 0;
};

int FreeTcpPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// `n` fresh nodes under `dir` (n = 1: a single node, no peers).
std::vector<std::unique_ptr<QuiverdChild>> StartNodes(const std::string& quiverd, const std::string& dir, int n) {
  std::filesystem::remove_all(dir);
  std::string peers;
  std::vector<int> ports;
  for (int i = 1; n > 1 && i <= n; ++i) {
    ports.push_back(FreeTcpPort());
    peers += (peers.empty() ? "" : ",") + std::to_string(i) + "=127.0.0.1:" + std::to_string(ports.back());
  }
  std::vector<std::unique_ptr<QuiverdChild>> nodes;
  for (int i = 1; i <= n; ++i) {
    std::vector<std::string> flags = {"--node-id", std::to_string(i)};
    if (n > 1) {
      flags.insert(flags.end(), {"--peers", peers, "--peer-listen",
                                 "127.0.0.1:" + std::to_string(ports[static_cast<size_t>(i - 1)])});
    }
    nodes.push_back(std::make_unique<QuiverdChild>(quiverd, dir + "/node" + std::to_string(i), flags));
  }
  for (auto& node : nodes) {
    if (!node->Start()) {
      std::fprintf(stderr, "quiverd did not start (see %s)\n", dir.c_str());
      return {};
    }
  }
  return nodes;
}

// A node's Cluster.Status (false if it does not answer within 500 ms).
bool ClusterStatusOf(const std::string& address, quiver::v1::ClusterStatusResponse* resp) {
  auto stub = quiver::v1::Cluster::NewStub(ChannelTo(address, 0));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  return stub->Status(&ctx, {}, resp).ok();
}

// The node that says it leads (-1 until one does, at most 20 s).
int FindLeader(const std::vector<std::unique_ptr<QuiverdChild>>& nodes, const std::set<size_t>& skip = {}) {
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (skip.contains(i)) continue;
      quiver::v1::ClusterStatusResponse resp;
      if (ClusterStatusOf(nodes[i]->address(), &resp) && resp.role() == "leader") return static_cast<int>(i);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

// Waits (at most 20 s) until every node has applied what any of them had
// committed: each follower is then reachable and replicating. A node that
// started after the leader's first sends failed can otherwise stay behind
// for a second or two (its peers' reconnect back-off), and a measurement
// that short would time a cluster replicating to one follower only.
bool WaitAllCaughtUp(const std::vector<std::string>& nodes) {
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  uint64_t commit = 0;
  while (Clock::now() < deadline) {
    uint64_t least_applied = UINT64_MAX;
    for (const auto& address : nodes) {
      quiver::v1::ClusterStatusResponse resp;
      if (!ClusterStatusOf(address, &resp)) {
        least_applied = 0;
        continue;
      }
      commit = std::max(commit, resp.commit_index());
      least_applied = std::min(least_applied, resp.applied_index());
    }
    if (commit > 0 && least_applied >= commit) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Durable Upsert throughput into a new collection through `targets`, once
// every node in `replicas` has applied its creation.
UpsertRun MeasureUpserts(const std::vector<std::string>& targets, size_t clients, size_t batch, size_t dim,
                         size_t total, const std::vector<std::string>& replicas = {}) {
  for (int attempt = 0; attempt < 100; ++attempt) {  // the cluster may still be electing
    if (CreateCollection(ChannelTo(targets[0], 0).get(), "ingest", static_cast<uint32_t>(dim))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!replicas.empty() && !WaitAllCaughtUp(replicas)) {
    std::fprintf(stderr, "a replica did not catch up within 20 s; measuring anyway\n");
  }
  const UpsertRun run = TimeUpserts(targets, clients, batch, dim, total);
  if (run.failed > 0) std::fprintf(stderr, "%zu upserts failed\n", run.failed);
  return run;
}

// The cluster numbers of the Raft issue, with processes on this machine:
// durable upsert throughput of 3 nodes (through the leader, and spread over
// all nodes) against a single node, rounds interleaved; then leader failover
// with default settings: kill -9 of the leader until the first write sent
// after the kill is acknowledged, through a surviving node.
int RunCluster(const std::string& quiverd, int rounds, size_t clients, size_t batch, size_t dim, size_t total,
               int failovers) {
  const std::string dir = "/tmp/quiver-bench-cluster";
  std::vector<double> single, leader_only, spread;
  for (int r = 0; r < rounds; ++r) {
    // CPU seconds each node used (start-up included): where the nodes share
    // the machine's cores, the ratio of the three nodes' CPU to the single
    // node's bounds the throughput ratio (bench/RESULTS.md, session 14).
    // The clients' CPU while timed is printed too: on a shared machine it
    // comes out of the same cores.
    double single_cpu = 0;
    std::vector<double> three_cpu;
    UpsertRun single_run, leader_run;
    {
      auto nodes = StartNodes(quiverd, dir, 1);
      if (nodes.empty()) return 1;
      single_run = MeasureUpserts({nodes[0]->address()}, clients, batch, dim, total);
      single.push_back(single_run.VectorsPerSecond());
      single_cpu = nodes[0]->CpuSeconds();
    }
    {
      auto nodes = StartNodes(quiverd, dir, 3);
      if (nodes.empty()) return 1;
      const int l = FindLeader(nodes);
      if (l < 0) return 1;
      std::vector<std::string> all;
      for (auto& n : nodes) all.push_back(n->address());
      leader_run = MeasureUpserts({nodes[static_cast<size_t>(l)]->address()}, clients, batch, dim, total, all);
      leader_only.push_back(leader_run.VectorsPerSecond());
      three_cpu.push_back(nodes[static_cast<size_t>(l)]->CpuSeconds());  // the leader first
      for (size_t i = 0; i < nodes.size(); ++i) {
        if (static_cast<int>(i) != l) three_cpu.push_back(nodes[i]->CpuSeconds());
      }
    }
    {
      auto nodes = StartNodes(quiverd, dir, 3);
      if (nodes.empty() || FindLeader(nodes) < 0) return 1;
      std::vector<std::string> all;
      for (auto& n : nodes) all.push_back(n->address());
      const UpsertRun run = MeasureUpserts(all, clients, batch, dim, total, all);
      spread.push_back(run.VectorsPerSecond());
    }
    std::printf("round %d: single %.0f, 3 nodes via leader %.0f, via all nodes %.0f vectors/s\n", r + 1,
                single.back(), leader_only.back(), spread.back());
    std::printf("  CPU s: single %.2f; via leader: leader %.2f, followers %.2f and %.2f (%.2fx single); "
                "clients %.2f and %.2f\n",
                single_cpu, three_cpu[0], three_cpu[1], three_cpu[2],
                (three_cpu[0] + three_cpu[1] + three_cpu[2]) / single_cpu, single_run.client_cpu,
                leader_run.client_cpu);
    std::printf("  cores busy while timed: single %.2f, via leader %.2f (of %u)\n", single_run.busy_cores,
                leader_run.busy_cores, std::thread::hardware_concurrency());
  }
  const double s = Median(single), l = Median(leader_only), a = Median(spread);
  std::printf("\nDurable Upsert (%zu clients, batches of %zu x %zu-d, %zu vectors; median of %d rounds):\n"
              "  single node        %.0f vectors/s\n  3 nodes via leader %.0f vectors/s (%.2f of single)\n"
              "  3 nodes via all    %.0f vectors/s (%.2f of single)\n",
              clients, batch, dim, total, rounds, s, l, l / s, a, a / s);

  std::vector<double> failover_s;
  auto nodes = StartNodes(quiverd, dir, 3);
  if (nodes.empty() || FindLeader(nodes) < 0) return 1;
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (CreateCollection(ChannelTo(nodes[0]->address(), 0).get(), "failover", static_cast<uint32_t>(dim))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto data = RandomData(10, dim, 5);
  for (int f = 0; f < failovers; ++f) {
    const int l = FindLeader(nodes);
    if (l < 0) return 1;
    const size_t via = (static_cast<size_t>(l) + 1) % nodes.size();
    std::atomic<bool> done{false};
    std::atomic<int64_t> kill_ns{0}, first_ok_ns{0};
    auto ns = [] { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); };
    std::thread writer([&] {
      auto stub = quiver::v1::Points::NewStub(ChannelTo(nodes[via]->address(), 99));
      uint64_t id = 0;
      while (!done.load()) {
        const int64_t sent = ns();
        auto req = MakeUpsert("failover", data.data(), (id++ % 1000) * 10, 10, dim);
        quiver::v1::UpsertResponse resp;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
        const bool ok = stub->Upsert(&ctx, req, &resp).ok();
        const int64_t k = kill_ns.load();
        if (ok && k != 0 && sent > k) {
          first_ok_ns.store(ns());
          return;
        }
        if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    kill_ns.store(ns());
    nodes[static_cast<size_t>(l)]->Kill(SIGKILL);
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (first_ok_ns.load() == 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    done = true;
    writer.join();
    if (first_ok_ns.load() == 0) {
      std::fprintf(stderr, "failover %d: no write acknowledged within 30 s\n", f + 1);
      return 1;
    }
    failover_s.push_back(double(first_ok_ns.load() - kill_ns.load()) / 1e9);
    std::printf("failover %d: %.3f s\n", f + 1, failover_s.back());
    if (!nodes[static_cast<size_t>(l)]->Start()) return 1;  // back in, for the next round
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  std::vector<double> sorted = failover_s;
  std::sort(sorted.begin(), sorted.end());
  std::string failover_median, failover_max;  // empty in the CSV with --failovers 0
  if (!sorted.empty()) {
    std::printf("\nLeader failover, kill -9 to the first acknowledged write (default settings, %d runs): "
                "median %.2f s, min %.2f s, max %.2f s\n",
                failovers, Median(failover_s), sorted.front(), sorted.back());
    failover_median = std::to_string(Median(failover_s));
    failover_max = std::to_string(sorted.back());
  }
  std::filesystem::create_directories("bench/results");
  std::ofstream("bench/results/cluster.csv")
      << "clients,batch,dim,vectors,single_vps,three_via_leader_vps,three_via_all_vps,failover_median_s,"
         "failover_max_s\n"
      << clients << "," << batch << "," << dim << "," << total << "," << s << "," << l << "," << a << ","
      << failover_median << "," << failover_max << "\n";
  return 0;
}

std::vector<uint64_t> SearchIds(grpc::Channel* ch, const std::string& name, const std::vector<float>& queries,
                                size_t nq, size_t dim, size_t k) {
  auto stub = quiver::v1::Points::NewStub(std::shared_ptr<grpc::Channel>(ch, [](grpc::Channel*) {}));
  quiver::v1::SearchBatchRequest req;
  req.set_collection(name);
  req.set_k(static_cast<uint32_t>(k));
  for (size_t i = 0; i < nq; ++i) {
    req.add_queries()->mutable_values()->Add(queries.data() + i * dim, queries.data() + (i + 1) * dim);
  }
  quiver::v1::SearchBatchResponse resp;
  grpc::ClientContext ctx;
  std::vector<uint64_t> ids;
  if (!stub->SearchBatch(&ctx, req, &resp).ok()) return ids;
  for (const auto& r : resp.results()) {
    for (const auto& h : r.hits()) ids.push_back(h.id());
  }
  return ids;
}

int RunRestart(size_t n, size_t nq, size_t dim, size_t k, size_t clusters, int threads) {
  const std::string dir = "/tmp/quiver-bench-restart";
  auto all = quiver::GaussianMixture(n + nq, dim, clusters, 42);
  std::vector<float> queries(all.begin() + long(n * dim), all.end());
  std::vector<uint64_t> before;
  quiver::v1::CollectionInfo info;
  {
    LocalServer server(dir, static_cast<uint32_t>(threads));
    quiver::v1::CollectionConfig config;
    config.set_name("restart");
    config.set_dimension(static_cast<uint32_t>(dim));
    config.set_metric(quiver::v1::L2);
    config.mutable_index()->set_type(quiver::v1::IVF_FLAT);
    if (!CreateWithConfig(server.channel.get(), config)) return 1;
    auto t0 = Clock::now();
    if (!UpsertAll(server.channel.get(), "restart", all.data(), n, dim)) return 1;
    std::printf("restart: upserted %zu x %zu-d in %.1f s; waiting for the index builds\n", n, dim, Seconds(t0));
    info = WaitForIndexes(server.channel.get(), "restart");
    std::printf("restart: %u sealed segments indexed after %.1f s\n", info.sealed_segments(), Seconds(t0));
    before = SearchIds(server.channel.get(), "restart", queries, nq, dim, k);
  }  // a clean stop, as SIGTERM does
  const auto t0 = Clock::now();
  LocalServer server(dir, static_cast<uint32_t>(threads), /*keep_data=*/true);
  const double serving = Seconds(t0);  // the ready file is written once the log is replayed and gRPC listens
  const auto again = DescribeCollection(server.channel.get(), "restart");
  const auto after = SearchIds(server.channel.get(), "restart", queries, nq, dim, k);
  size_t same = 0;
  for (size_t i = 0; i < std::min(before.size(), after.size()); ++i) same += before[i] == after[i];
  std::printf("restart: serving again after %.2f s with %u of %u segments indexed; %zu of %zu result ids unchanged\n",
              serving, again.indexed_segments(), again.sealed_segments(), same, before.size());
  std::filesystem::create_directories("bench/results");
  std::ofstream("bench/results/restart.csv")
      << "points,dim,sealed_segments,indexed_after_restart,restart_seconds,result_ids_unchanged,result_ids\n"
      << n << "," << dim << "," << again.sealed_segments() << "," << again.indexed_segments() << "," << serving << ","
      << same << "," << before.size() << "\n";
  return again.indexed_segments() == info.indexed_segments() && same == before.size() ? 0 : 1;
}

// Filtered search through gRPC on an IVF_FLAT collection whose points carry
// {"bucket": id % buckets, "bucket_copy": same}; only "bucket" is indexed.
// A filter on one bucket keeps 1/buckets of the points: recall@k against the
// exact filtered answer, and QPS with the payload index and without it.
int RunFilter(size_t n, size_t nq, size_t dim, size_t k, size_t clusters, size_t buckets, int threads) {
  auto all = quiver::GaussianMixture(n + nq, dim, clusters, 42);
  std::vector<float> queries(all.begin() + long(n * dim), all.end());
  LocalServer server("/tmp/quiver-bench-filter", static_cast<uint32_t>(threads));
  auto points = quiver::v1::Points::NewStub(server.channel);
  quiver::v1::CollectionConfig config;
  config.set_name("filtered");
  config.set_dimension(static_cast<uint32_t>(dim));
  config.set_metric(quiver::v1::L2);
  config.mutable_index()->set_type(quiver::v1::IVF_FLAT);
  config.add_indexed_payload_fields("bucket");
  if (!CreateWithConfig(server.channel.get(), config)) return 1;
  const auto t0 = Clock::now();
  const bool filled = UpsertAll(server.channel.get(), "filtered", all.data(), n, dim, [&](quiver::v1::Point* p) {
    (*p->mutable_payload())["bucket"].set_int_value(static_cast<int64_t>(p->id() % buckets));
    (*p->mutable_payload())["bucket_copy"].set_int_value(static_cast<int64_t>(p->id() % buckets));
  });
  if (!filled) return 1;
  WaitForIndexes(server.channel.get(), "filtered");
  server.WaitForBackgroundWork();
  std::printf("filter: %zu points with payloads upserted and indexed in %.1f s\n", n, Seconds(t0));
  // Exact filtered truth: the points of bucket 7 only.
  const int64_t bucket = 7;
  std::vector<float> sub;
  std::vector<uint64_t> sub_ids;
  for (size_t i = 0; i < n; ++i) {
    if (static_cast<int64_t>(i % buckets) != bucket) continue;
    sub_ids.push_back(i);
    sub.insert(sub.end(), all.begin() + long(i * dim), all.begin() + long((i + 1) * dim));
  }
  std::vector<float> norms(sub_ids.size());
  quiver::kernels::SquaredNorms(sub.data(), sub_ids.size(), dim, norms.data());
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  (void)quiver::kernels::FlatSearch({}, {sub.data(), norms.data(), sub_ids.size(), dim}, queries.data(), nq,
                                    {quiver::kernels::Metric::kL2, k}, rows.data(), scores.data());
  std::vector<int64_t> truth(nq * k);
  for (size_t i = 0; i < nq * k; ++i) truth[i] = rows[i] >= 0 ? static_cast<int64_t>(sub_ids[size_t(rows[i])]) : -1;
  std::printf("%-24s %10s %10s\n", "filter on", "recall@k", "QPS");
  for (const char* field : {"bucket", "bucket_copy"}) {
    std::vector<double> times;
    std::vector<int64_t> got;
    for (int r = 0; r < 4; ++r) {
      got.clear();
      const auto s0 = Clock::now();
      for (size_t lo = 0; lo < nq; lo += 100) {
        quiver::v1::SearchBatchRequest req;
        req.set_collection("filtered");
        req.set_k(static_cast<uint32_t>(k));
        req.mutable_filter()->mutable_match()->set_key(field);
        req.mutable_filter()->mutable_match()->mutable_value()->set_int_value(bucket);
        for (size_t i = lo; i < std::min(nq, lo + 100); ++i) {
          req.add_queries()->mutable_values()->Add(queries.data() + i * dim, queries.data() + (i + 1) * dim);
        }
        quiver::v1::SearchBatchResponse resp;
        grpc::ClientContext ctx;
        if (!points->SearchBatch(&ctx, req, &resp).ok()) return 1;
        for (const auto& res : resp.results()) {
          for (size_t j = 0; j < k; ++j) got.push_back(j < size_t(res.hits_size()) ? int64_t(res.hits(int(j)).id()) : -1);
        }
      }
      if (r > 0) times.push_back(Seconds(s0));
    }
    const double recall = RecallAtK(got, truth, nq, k);
    std::printf("%-24s %10.4f %10.0f   (%s)\n", field, recall, double(nq) / Median(times),
                std::string(field) == "bucket" ? "payload index" : "no index: payloads parsed");
  }
  return 0;
}

// Writes a synthetic dataset and its exact ground truth to `out`:
// base.fvecs, queries.fvecs (the mixture's last nq draws) and
// groundtruth.ivecs (k nearest base rows per query under `metric`).
int RunGen(size_t n, size_t nq, size_t dim, size_t k, size_t clusters, uint64_t seed, const std::string& metric_name,
           const std::string& out) {
  quiver::kernels::Metric metric = quiver::kernels::Metric::kL2;
  if (metric_name == "ip") metric = quiver::kernels::Metric::kInnerProduct;
  if (metric_name == "cosine") metric = quiver::kernels::Metric::kCosine;
  const bool unit = metric != quiver::kernels::Metric::kL2;  // unit-norm vectors for IP and cosine
  auto all = quiver::GaussianMixture(n + nq, dim, clusters, seed, unit);
  quiver::FloatMatrix base{n, dim, std::vector<float>(all.begin(), all.begin() + long(n * dim))};
  quiver::FloatMatrix queries{nq, dim, std::vector<float>(all.begin() + long(n * dim), all.end())};
  std::vector<float> norms(n);
  quiver::kernels::SquaredNorms(base.data.data(), n, dim, norms.data());
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  auto st = quiver::kernels::FlatSearch({}, {base.data.data(), norms.data(), n, dim}, queries.data.data(), nq,
                                        {metric, k}, rows.data(), scores.data());
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  quiver::IntMatrix truth{nq, k, std::vector<int32_t>(rows.begin(), rows.end())};
  std::filesystem::create_directories(out);
  for (auto s : {quiver::WriteFvecs(out + "/base.fvecs", base), quiver::WriteFvecs(out + "/queries.fvecs", queries),
                 quiver::WriteIvecs(out + "/groundtruth.ivecs", truth)}) {
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::printf("gen: %zu base and %zu query vectors of dimension %zu (%zu clusters, seed %llu, %s) and their %zu "
              "exact neighbours in %s\n",
              n, nq, dim, clusters, static_cast<unsigned long long>(seed), metric_name.c_str(), k, out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  quiver::kernels::EnsureFastBlas(argv);
  CLI::App app{"quiver-bench: Quiver against FAISS, same data, same run", "quiver-bench"};
  app.require_subcommand(1);
  size_t n = 100000, nq = 1000, dim = 128, k = 10;
  int threads = 2, repeats = 5;
  bool no_grpc = false;
  int conc_clients = 64;
  double seconds = 5;
  int rounds = 3;
  uint32_t batch_wait_us = 200;
  auto* concurrent = app.add_subcommand("concurrent", "single-query clients against a server with dynamic batching off, then on");
  concurrent->add_option("--n", n, "base vectors (FLAT)")->capture_default_str();
  concurrent->add_option("--dim", dim, "dimension")->capture_default_str();
  concurrent->add_option("--k", k, "neighbours")->capture_default_str();
  concurrent->add_option("--threads", threads, "server search threads")->capture_default_str();
  concurrent->add_option("--clients", conc_clients, "concurrent closed-loop clients")->capture_default_str();
  concurrent->add_option("--seconds", seconds, "measured seconds per run")->capture_default_str();
  concurrent->add_option("--rounds", rounds, "off/on pairs")->capture_default_str();
  concurrent->add_option("--batch-wait-us", batch_wait_us, "search_batch_max_wait_us when on")->capture_default_str();
  std::string conc_index = "flat", conc_gpu = "auto";
  concurrent->add_option("--index", conc_index, "the collection's index")
      ->check(CLI::IsMember({"flat", "ivf_flat", "ivf_pq", "graph"}))
      ->capture_default_str();
  concurrent->add_option("--gpu", conc_gpu, "the server's gpu setting: auto, off or a device number")
      ->capture_default_str();
  auto* flat = app.add_subcommand("flat", "exact SearchBatch: Quiver in-process and via gRPC vs FAISS IndexFlatL2");
  flat->add_option("--n", n, "base vectors")->capture_default_str();
  flat->add_option("--nq", nq, "queries")->capture_default_str();
  flat->add_option("--dim", dim, "dimension")->capture_default_str();
  flat->add_option("--k", k, "neighbours")->capture_default_str();
  flat->add_option("--threads", threads, "threads for every method")->capture_default_str();
  flat->add_option("--repeats", repeats, "timed rounds (median reported)")->capture_default_str();
  flat->add_flag("--no-grpc", no_grpc, "skip the gRPC measurement");
  size_t nlist = 1024, clusters = 1000;
  auto* ivf = app.add_subcommand("ivf", "IVF_FLAT nprobe sweep vs FAISS IndexIVFFlat (same nlist), recall vs exact");
  ivf->add_option("--n", n, "base vectors")->capture_default_str();
  ivf->add_option("--nq", nq, "queries")->capture_default_str();
  ivf->add_option("--dim", dim, "dimension")->capture_default_str();
  ivf->add_option("--k", k, "neighbours")->capture_default_str();
  ivf->add_option("--nlist", nlist, "inverted lists")->capture_default_str();
  ivf->add_option("--clusters", clusters, "Gaussian mixture components")->capture_default_str();
  ivf->add_option("--threads", threads, "threads for every method")->capture_default_str();
  ivf->add_option("--repeats", repeats, "timed rounds (median reported)")->capture_default_str();
  bool ivf_grpc = false;
  std::string hdf5;
  ivf->add_option("--hdf5", hdf5, "ann-benchmarks HDF5 file (train/test/neighbors) instead of synthetic data")
      ->check(CLI::ExistingFile);
  ivf->add_flag("--grpc", ivf_grpc, "also time SearchBatch calls of 100 queries through a local quiverd");
  bool ivf_no_hnsw = false;
  size_t grpc_clients = 2;
  ivf->add_option("--grpc-clients", grpc_clients, "concurrent gRPC clients, each on its own connection")
      ->capture_default_str();
  ivf->add_flag("--no-hnsw", ivf_no_hnsw, "skip the HNSW baselines (hnswlib, FAISS IndexHNSWFlat)");
  size_t clients = 4, batch = 1000, total = 400000;
  auto* upsert = app.add_subcommand("upsert", "durable Upsert throughput through gRPC");
  upsert->add_option("--clients", clients, "concurrent clients")->capture_default_str();
  upsert->add_option("--batch", batch, "points per Upsert")->capture_default_str();
  upsert->add_option("--dim", dim, "dimension")->capture_default_str();
  upsert->add_option("--total", total, "vectors in all")->capture_default_str();
  int cluster_rounds = 3, failovers = 10;
  std::string quiverd = (std::filesystem::canonical("/proc/self/exe").parent_path().parent_path() / "service/quiverd").string();
  auto* cluster = app.add_subcommand("cluster", "3-node vs single-node durable Upsert, and leader failover time (processes)");
  cluster->add_option("--rounds", cluster_rounds, "interleaved rounds (median reported)")->capture_default_str();
  cluster->add_option("--clients", clients, "concurrent clients")->capture_default_str();
  cluster->add_option("--batch", batch, "points per Upsert")->capture_default_str();
  cluster->add_option("--dim", dim, "dimension")->capture_default_str();
  cluster->add_option("--total", total, "vectors per measurement")->capture_default_str();
  cluster->add_option("--failovers", failovers, "leader kills timed")->capture_default_str();
  cluster->add_option("--quiverd", quiverd, "quiverd binary")->capture_default_str();
  auto* restart = app.add_subcommand("restart", "time until a restarted quiverd serves an IVF_FLAT collection again");
  restart->add_option("--n", n, "vectors")->capture_default_str();
  restart->add_option("--nq", nq, "queries compared before and after")->capture_default_str();
  restart->add_option("--dim", dim, "dimension")->capture_default_str();
  restart->add_option("--clusters", clusters, "Gaussian mixture components")->capture_default_str();
  restart->add_option("--threads", threads, "search threads")->capture_default_str();
  size_t buckets = 100;
  auto* filter = app.add_subcommand("filter", "filtered search through gRPC: recall and QPS with and without a payload index");
  filter->add_option("--n", n, "vectors")->capture_default_str();
  filter->add_option("--nq", nq, "queries")->capture_default_str();
  filter->add_option("--dim", dim, "dimension")->capture_default_str();
  filter->add_option("--k", k, "neighbours")->capture_default_str();
  filter->add_option("--clusters", clusters, "Gaussian mixture components")->capture_default_str();
  filter->add_option("--buckets", buckets, "a filter keeps 1 / buckets of the points")->capture_default_str();
  filter->add_option("--threads", threads, "search threads")->capture_default_str();
  uint64_t seed = 42;
  std::string metric_name = "l2", out_dir = "bench/results/gen";
  auto* gen = app.add_subcommand("gen", "write a Gaussian-mixture dataset (.fvecs) and exact ground truth (.ivecs)");
  gen->add_option("--n", n, "base vectors")->capture_default_str();
  gen->add_option("--nq", nq, "queries")->capture_default_str();
  gen->add_option("--dim", dim, "dimension")->capture_default_str();
  gen->add_option("--k", k, "neighbours in the ground truth")->capture_default_str();
  gen->add_option("--clusters", clusters, "mixture components (anisotropic)")->capture_default_str();
  gen->add_option("--seed", seed, "random seed")->capture_default_str();
  gen->add_option("--metric", metric_name, "l2, or ip / cosine (unit-norm vectors)")
      ->check(CLI::IsMember({"l2", "ip", "cosine"}))
      ->capture_default_str();
  gen->add_option("--out", out_dir, "output directory")->capture_default_str();
  uint32_t degree = 32;
  bool graph_no_hnsw = false;
  std::string graph_metric = "l2";
  auto* graph = app.add_subcommand("graph", "GRAPH itopk sweep vs hnswlib (M=32, efC=200), recall vs exact");
  graph->add_option("--n", n, "base vectors")->capture_default_str();
  graph->add_option("--nq", nq, "queries")->capture_default_str();
  graph->add_option("--dim", dim, "dimension")->capture_default_str();
  graph->add_option("--k", k, "neighbours")->capture_default_str();
  graph->add_option("--clusters", clusters, "Gaussian mixture components")->capture_default_str();
  graph->add_option("--metric", graph_metric, "l2, or ip (unit-norm vectors)")
      ->check(CLI::IsMember({"l2", "ip"}))
      ->capture_default_str();
  graph->add_option("--degree", degree, "GRAPH out-degree")->capture_default_str();
  graph->add_option("--threads", threads, "threads for every method")->capture_default_str();
  graph->add_option("--repeats", repeats, "timed rounds (median reported)")->capture_default_str();
  graph->add_flag("--no-hnsw", graph_no_hnsw, "skip hnswlib");
  std::string graph_index_file;
  graph->add_option("--index-file", graph_index_file,
                    "load the GRAPH index from this file if it exists (same data and settings), else build it and "
                    "save it there");
  uint32_t pq_dim = 0, pq_bits = 8, refine = 8;
  std::string pq_metric = "l2";
  auto* pq = app.add_subcommand("pq", "IVF_PQ vs IVF_FLAT nprobe sweep (same nlist): recall, QPS, memory per vector");
  pq->add_option("--n", n, "base vectors")->capture_default_str();
  pq->add_option("--nq", nq, "queries")->capture_default_str();
  pq->add_option("--dim", dim, "dimension")->capture_default_str();
  pq->add_option("--k", k, "neighbours")->capture_default_str();
  pq->add_option("--nlist", nlist, "inverted lists")->capture_default_str();
  pq->add_option("--clusters", clusters, "Gaussian mixture components")->capture_default_str();
  pq->add_option("--metric", pq_metric, "l2, or ip (unit-norm vectors)")
      ->check(CLI::IsMember({"l2", "ip"}))
      ->capture_default_str();
  pq->add_option("--pq-dim", pq_dim, "sub-quantisers (0 = dim / 2)")->capture_default_str();
  pq->add_option("--pq-bits", pq_bits, "bits per code, 4 or 8")->capture_default_str();
  pq->add_option("--refine-factor", refine, "k * this candidates re-scored exactly")->capture_default_str();
  pq->add_option("--threads", threads, "threads")->capture_default_str();
  pq->add_option("--repeats", repeats, "timed rounds (median reported)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (pq->parsed()) {
    return RunPq(n, nq, dim, k, nlist, clusters, threads, repeats, pq_metric, pq_dim, pq_bits, refine);
  }
  if (graph->parsed()) {
    return RunGraph(n, nq, dim, k, clusters, threads, repeats, graph_metric, degree, !graph_no_hnsw, graph_index_file);
  }
  if (filter->parsed()) return RunFilter(n, nq, dim, k, clusters, buckets, threads);
  if (cluster->parsed()) return RunCluster(quiverd, cluster_rounds, clients, batch, dim, total, failovers);
  if (gen->parsed()) return RunGen(n, nq, dim, k, clusters, seed, metric_name, out_dir);
  if (restart->parsed()) return RunRestart(n, nq, dim, k, clusters, threads);
  if (concurrent->parsed()) return RunConcurrent(n, dim, k, threads, conc_clients, seconds, rounds, batch_wait_us, conc_index, conc_gpu);
  if (flat->parsed()) return RunFlat(n, nq, dim, k, threads, repeats, !no_grpc);
  if (ivf->parsed()) return RunIvf(n, nq, dim, k, nlist, clusters, threads, repeats, ivf_grpc, grpc_clients, !ivf_no_hnsw, hdf5);
  return RunUpsert(clients, batch, dim, total);
}
