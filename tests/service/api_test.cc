// The public API through real gRPC calls: behaviour, and every bad-input case
// answered with a precise status that names the field and changes nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <random>
#include <thread>

#include "raw_call.h"
#include "service/api.h"
#include "server_fixture.h"
#include "test_util.h"
#include "tls_files.h"

namespace quiver::service {
namespace {

using namespace quiver::v1;  // NOLINT
using quiver::testing::InProcessServer;

class ApiTest : public ::testing::Test {
 protected:
  static ServerConfig Config() {
    ServerConfig cfg;
    cfg.max_k = 100;
    cfg.max_points_per_request = 500;
    cfg.max_batch_queries = 50;
    cfg.max_message_bytes = 4 << 20;
    cfg.max_payload_bytes = 1024;
    return cfg;
  }
  ApiTest() : server_(Config()) {}

  grpc::Status CreateCollection(const std::string& name, uint32_t dim, Metric metric = L2,
                                IndexType index = FLAT) {
    CreateCollectionRequest req;
    req.mutable_config()->set_name(name);
    req.mutable_config()->set_dimension(dim);
    req.mutable_config()->set_metric(metric);
    req.mutable_config()->mutable_index()->set_type(index);
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    return server_.collections->Create(&ctx, req, &resp);
  }
  grpc::Status Upsert(const UpsertRequest& req) {
    UpsertResponse resp;
    grpc::ClientContext ctx;
    return server_.points->Upsert(&ctx, req, &resp);
  }
  static Point MakePoint(uint64_t id, std::vector<float> v) {
    Point p;
    p.set_id(id);
    p.mutable_vector()->Add(v.begin(), v.end());
    return p;
  }
  uint64_t Count(const std::string& name) {
    CountRequest req;
    req.set_collection(name);
    CountResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(server_.points->Count(&ctx, req, &resp).ok());
    return resp.count();
  }
  // Asserts the code and that the message mentions `needle`.
  static void ExpectError(const grpc::Status& st, grpc::StatusCode code, const std::string& needle) {
    EXPECT_EQ(st.error_code(), code) << st.error_message();
    EXPECT_NE(st.error_message().find(needle), std::string::npos)
        << "message '" << st.error_message() << "' does not mention '" << needle << "'";
  }

  InProcessServer server_;
};

TEST_F(ApiTest, CollectionLifecycle) {
  ASSERT_TRUE(CreateCollection("docs", 3, COSINE).ok());
  ASSERT_TRUE(CreateCollection("imgs", 2, IP).ok());
  {
    ListCollectionsResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.collections->List(&ctx, {}, &resp).ok());
    ASSERT_EQ(resp.collections_size(), 2);
    EXPECT_EQ(resp.collections(0).config().name(), "docs");
    EXPECT_EQ(resp.collections(0).config().metric(), COSINE);
    EXPECT_EQ(resp.collections(0).config().index().type(), FLAT);
  }
  {
    GetCollectionRequest req;
    req.set_name("imgs");
    GetCollectionResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.collections->Get(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.collection().config().dimension(), 2u);
  }
  {
    DeleteCollectionRequest req;
    req.set_name("imgs");
    DeleteCollectionResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.collections->Delete(&ctx, req, &resp).ok());
    grpc::ClientContext ctx2;
    ExpectError(server_.collections->Delete(&ctx2, req, &resp), grpc::StatusCode::NOT_FOUND, "imgs");
  }
}

TEST_F(ApiTest, UpsertGetSearchDelete) {
  ASSERT_TRUE(CreateCollection("c", 2).ok());
  UpsertRequest up;
  up.set_collection("c");
  for (uint64_t i = 0; i < 10; ++i) {
    Point p = MakePoint(i, {float(i), 0});
    (*p.mutable_payload())["tag"].set_string_value("t" + std::to_string(i));
    (*p.mutable_payload())["n"].set_int_value(int64_t(i));
    auto* list = (*p.mutable_payload())["l"].mutable_list_value();
    list->add_values()->set_bool_value(true);
    list->add_values()->set_double_value(0.5);
    *up.add_points() = p;
  }
  ASSERT_TRUE(Upsert(up).ok());
  EXPECT_EQ(Count("c"), 10u);

  SearchRequest sreq;
  sreq.set_collection("c");
  sreq.add_vector(3.2f);
  sreq.add_vector(0);
  sreq.set_k(3);
  sreq.set_with_payload(true);
  sreq.set_with_vector(true);
  SearchResponse sresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.points->Search(&ctx, sreq, &sresp).ok());
  }
  ASSERT_EQ(sresp.hits_size(), 3);
  EXPECT_EQ(sresp.hits(0).id(), 3u);
  EXPECT_NEAR(sresp.hits(0).score(), 0.04f, 1e-5);
  EXPECT_EQ(sresp.hits(1).id(), 4u);
  EXPECT_EQ(sresp.hits(0).payload().at("tag").string_value(), "t3");
  EXPECT_EQ(sresp.hits(0).payload().at("l").list_value().values(1).double_value(), 0.5);
  EXPECT_EQ(sresp.hits(0).vector_size(), 2);

  DeletePointsRequest del;
  del.set_collection("c");
  del.add_ids(3);
  del.add_ids(12345);  // absent ids are ignored
  DeletePointsResponse dresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.points->Delete(&ctx, del, &dresp).ok());
  }
  EXPECT_EQ(Count("c"), 9u);
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.points->Search(&ctx, sreq, &sresp).ok());
    EXPECT_EQ(sresp.hits(0).id(), 4u) << "deleted point returned";
  }
  GetPointsRequest g;
  g.set_collection("c");
  g.add_ids(5);
  g.add_ids(3);
  g.set_with_payload(true);
  GetPointsResponse gresp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(server_.points->Get(&ctx, g, &gresp).ok());
  ASSERT_EQ(gresp.points_size(), 1);
  EXPECT_EQ(gresp.points(0).id(), 5u);
  EXPECT_EQ(gresp.points(0).payload().at("n").int_value(), 5);
  EXPECT_EQ(gresp.points(0).vector_size(), 0) << "vector not asked for";

  {  // Filtered: only the point tagged t5 qualifies, however far it is.
    SearchRequest f = sreq;
    f.mutable_filter()->mutable_match()->set_key("tag");
    f.mutable_filter()->mutable_match()->mutable_value()->set_string_value("t5");
    SearchResponse fr;
    grpc::ClientContext fctx;
    ASSERT_TRUE(server_.points->Search(&fctx, f, &fr).ok());
    ASSERT_EQ(fr.hits_size(), 1);
    EXPECT_EQ(fr.hits(0).id(), 5u);
  }
  SearchBatchRequest b;
  b.set_collection("c");
  b.set_k(20);
  for (int q = 0; q < 4; ++q) {
    auto* v = b.add_queries();
    v->add_values(float(q));
    v->add_values(0);
  }
  SearchBatchResponse bresp;
  grpc::ClientContext ctx2;
  ASSERT_TRUE(server_.points->SearchBatch(&ctx2, b, &bresp).ok());
  ASSERT_EQ(bresp.results_size(), 4);
  EXPECT_EQ(bresp.results(0).hits_size(), 9) << "k above the count returns every point";
  EXPECT_EQ(bresp.results(2).hits(0).id(), 2u);
}

TEST_F(ApiTest, RetriedWritesWithARequestIdApplyOnce) {
  CreateCollectionRequest create;
  create.mutable_config()->set_name("r");
  create.mutable_config()->set_dimension(2);
  create.mutable_config()->set_metric(L2);
  create.mutable_request_id()->set_client_id("client-A");
  create.mutable_request_id()->set_sequence(1);
  for (int attempt = 0; attempt < 2; ++attempt) {
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = server_.collections->Create(&ctx, create, &resp);
    EXPECT_TRUE(st.ok()) << "attempt " << attempt << ": " << st.error_message();  // not ALREADY_EXISTS
  }
  UpsertRequest up;
  up.set_collection("r");
  *up.add_points() = MakePoint(1, {1, 2});
  up.mutable_request_id()->set_client_id("client-A");
  up.mutable_request_id()->set_sequence(2);
  ASSERT_TRUE(Upsert(up).ok());
  DeletePointsRequest del;
  del.set_collection("r");
  del.add_ids(1);
  {
    DeletePointsResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.points->Delete(&ctx, del, &resp).ok());
  }
  EXPECT_TRUE(Upsert(up).ok());  // the retry answers as the first attempt did ...
  EXPECT_EQ(Count("r"), 0u);     // ... and does not write again
  up.mutable_request_id()->set_sequence(0);
  ExpectError(Upsert(up), grpc::StatusCode::INVALID_ARGUMENT, "request_id.sequence");
  up.mutable_request_id()->set_sequence(3);
  up.mutable_request_id()->set_client_id(std::string(129, 'x'));
  ExpectError(Upsert(up), grpc::StatusCode::INVALID_ARGUMENT, "128 bytes");
}

TEST_F(ApiTest, BadCollectionRequests) {
  ASSERT_TRUE(CreateCollection("taken", 4).ok());
  {
    CreateCollectionRequest req;
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    ExpectError(server_.collections->Create(&ctx, req, &resp), grpc::StatusCode::INVALID_ARGUMENT, "config");
  }
  ExpectError(CreateCollection("", 4), grpc::StatusCode::INVALID_ARGUMENT, "config.name");
  ExpectError(CreateCollection("bad name", 4), grpc::StatusCode::INVALID_ARGUMENT, "config.name");
  ExpectError(CreateCollection(std::string(65, 'x'), 4), grpc::StatusCode::INVALID_ARGUMENT, "config.name");
  ExpectError(CreateCollection("d0", 0), grpc::StatusCode::INVALID_ARGUMENT, "config.dimension");
  ExpectError(CreateCollection("d1", 4097), grpc::StatusCode::INVALID_ARGUMENT, "config.dimension");
  ExpectError(CreateCollection("m", 4, METRIC_UNSPECIFIED), grpc::StatusCode::INVALID_ARGUMENT, "config.metric");
  ExpectError(CreateCollection("m", 4, static_cast<Metric>(9)), grpc::StatusCode::INVALID_ARGUMENT, "config.metric");
  {
    CreateCollectionRequest req;
    req.mutable_config()->set_name("pq");
    req.mutable_config()->set_dimension(4);
    req.mutable_config()->set_metric(L2);
    req.mutable_config()->mutable_index()->set_type(IVF_PQ);
    req.mutable_config()->mutable_index()->mutable_ivf_pq()->set_pq_bits(7);
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    ExpectError(server_.collections->Create(&ctx, req, &resp), grpc::StatusCode::INVALID_ARGUMENT,
                "config.index.ivf_pq.pq_bits");
  }
  {
    CreateCollectionRequest req;
    req.mutable_config()->set_name("seg");
    req.mutable_config()->set_dimension(4);
    req.mutable_config()->set_metric(L2);
    req.mutable_config()->set_segment_max_points(10);
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    ExpectError(server_.collections->Create(&ctx, req, &resp), grpc::StatusCode::INVALID_ARGUMENT,
                "config.segment_max_points");
    req.mutable_config()->set_segment_max_points(0);
    req.mutable_config()->mutable_index()->set_type(IVF_FLAT);
    req.mutable_config()->mutable_index()->mutable_ivf_flat()->set_nlist(1 << 20);
    grpc::ClientContext ctx2;
    ExpectError(server_.collections->Create(&ctx2, req, &resp), grpc::StatusCode::INVALID_ARGUMENT,
                "config.index.ivf_flat.nlist");
  }
  {
    CreateCollectionRequest req;
    req.mutable_config()->set_name("g");
    req.mutable_config()->set_dimension(4);
    req.mutable_config()->set_metric(L2);
    req.mutable_config()->mutable_index()->set_type(GRAPH);
    req.mutable_config()->mutable_index()->mutable_graph()->set_degree(2);
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    ExpectError(server_.collections->Create(&ctx, req, &resp), grpc::StatusCode::INVALID_ARGUMENT,
                "config.index.graph.degree");
  }
  ExpectError(CreateCollection("i", 4, L2, static_cast<IndexType>(42)), grpc::StatusCode::INVALID_ARGUMENT,
              "config.index.type");
  ExpectError(CreateCollection("taken", 4), grpc::StatusCode::ALREADY_EXISTS, "taken");
  GetCollectionRequest g;
  g.set_name("nope");
  GetCollectionResponse gr;
  grpc::ClientContext ctx;
  ExpectError(server_.collections->Get(&ctx, g, &gr), grpc::StatusCode::NOT_FOUND, "nope");
  ListCollectionsResponse list;
  grpc::ClientContext ctx2;
  ASSERT_TRUE(server_.collections->List(&ctx2, {}, &list).ok());
  EXPECT_EQ(list.collections_size(), 1) << "a refused create changed something";
}

TEST_F(ApiTest, BadUpsertsChangeNothing) {
  ASSERT_TRUE(CreateCollection("c", 3).ok());
  UpsertRequest good;
  good.set_collection("c");
  *good.add_points() = MakePoint(1, {1, 2, 3});
  ASSERT_TRUE(Upsert(good).ok());

  auto with = [&](std::function<void(UpsertRequest*)> edit) {
    UpsertRequest r;
    r.set_collection("c");
    *r.add_points() = MakePoint(1, {9, 9, 9});  // would overwrite if accepted
    *r.add_points() = MakePoint(2, {4, 5, 6});
    edit(&r);
    return Upsert(r);
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  ExpectError(with([](UpsertRequest* r) { r->set_collection("missing"); }), grpc::StatusCode::NOT_FOUND, "missing");
  ExpectError(with([](UpsertRequest* r) { r->set_collection("no/slash"); }), grpc::StatusCode::INVALID_ARGUMENT,
              "collection");
  ExpectError(with([](UpsertRequest* r) { r->clear_points(); }), grpc::StatusCode::INVALID_ARGUMENT, "points is empty");
  ExpectError(with([](UpsertRequest* r) { r->mutable_points(1)->add_vector(7); }), grpc::StatusCode::INVALID_ARGUMENT,
              "points[1].vector has 4 floats");
  ExpectError(with([&](UpsertRequest* r) { r->mutable_points(1)->set_vector(2, nan); }),
              grpc::StatusCode::INVALID_ARGUMENT, "points[1].vector[2]");
  ExpectError(with([&](UpsertRequest* r) { r->mutable_points(0)->set_vector(0, -inf); }),
              grpc::StatusCode::INVALID_ARGUMENT, "points[0].vector[0]");
  ExpectError(with([](UpsertRequest* r) { r->mutable_points(1)->set_id(1); }), grpc::StatusCode::INVALID_ARGUMENT,
              "points[1].id 1 is repeated");
  // The first point that repeats an earlier id is named, not the first id.
  ExpectError(with([](UpsertRequest* r) {
                *r->add_points() = MakePoint(7, {1, 1, 1});
                *r->add_points() = MakePoint(2, {1, 1, 1});
                *r->add_points() = MakePoint(1, {1, 1, 1});
              }),
              grpc::StatusCode::INVALID_ARGUMENT, "points[3].id 2 is repeated");
  ExpectError(with([](UpsertRequest* r) { (*r->mutable_points(1)->mutable_payload())["x"]; }),
              grpc::StatusCode::INVALID_ARGUMENT, "points[1].payload['x'] has no value");
  ExpectError(with([&](UpsertRequest* r) { (*r->mutable_points(1)->mutable_payload())["d"].set_double_value(nan); }),
              grpc::StatusCode::INVALID_ARGUMENT, "points[1].payload['d']");
  ExpectError(with([](UpsertRequest* r) {
                auto* l = (*r->mutable_points(0)->mutable_payload())["l"].mutable_list_value();
                l->add_values()->mutable_list_value()->add_values()->set_int_value(1);
              }),
              grpc::StatusCode::INVALID_ARGUMENT, "nested list");
  ExpectError(with([](UpsertRequest* r) { (*r->mutable_points(0)->mutable_payload())[""].set_int_value(1); }),
              grpc::StatusCode::INVALID_ARGUMENT, "empty key");
  ExpectError(with([](UpsertRequest* r) {
                (*r->mutable_points(0)->mutable_payload())["big"].set_string_value(std::string(2000, 'x'));
              }),
              grpc::StatusCode::INVALID_ARGUMENT, "points[0].payload is");
  ExpectError(with([](UpsertRequest* r) {
                for (uint64_t i = 10; i < 600; ++i) *r->add_points() = MakePoint(i, {1, 1, 1});
              }),
              grpc::StatusCode::INVALID_ARGUMENT, "above the maximum of 500");
  // Over the message size limit: refused by gRPC itself.
  {
    UpsertRequest r;
    r.set_collection("c");
    Point p = MakePoint(5, {1, 1, 1});
    (*p.mutable_payload())["s"].set_string_value(std::string(5 << 20, 'y'));
    *r.add_points() = p;
    EXPECT_EQ(Upsert(r).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  {
    // Bytes that are not an UpsertRequest: points (field 2) declares more bytes than follow.
    const grpc::Status st = quiver::testing::CallWithRawBytes(
        server_.channel(), "/quiver.v1.Points/Upsert", std::string("\x0a\x01" "c" "\x12\x7f\x08\x01", 7));
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find("UpsertRequest"), std::string::npos) << st.error_message();
  }
  EXPECT_EQ(Count("c"), 1u);
  GetPointsRequest g;
  g.set_collection("c");
  g.add_ids(1);
  g.set_with_vector(true);
  GetPointsResponse gr;
  grpc::ClientContext ctx;
  ASSERT_TRUE(server_.points->Get(&ctx, g, &gr).ok());
  ASSERT_EQ(gr.points_size(), 1);
  EXPECT_EQ(gr.points(0).vector(0), 1.0f) << "a refused upsert overwrote a point";
}

TEST_F(ApiTest, BadSearches) {
  ASSERT_TRUE(CreateCollection("c", 2).ok());
  auto search = [&](std::function<void(SearchRequest*)> edit) {
    SearchRequest r;
    r.set_collection("c");
    r.add_vector(1);
    r.add_vector(2);
    r.set_k(5);
    edit(&r);
    SearchResponse resp;
    grpc::ClientContext ctx;
    return server_.points->Search(&ctx, r, &resp);
  };
  EXPECT_TRUE(search([](SearchRequest*) {}).ok());
  ExpectError(search([](SearchRequest* r) { r->set_k(0); }), grpc::StatusCode::INVALID_ARGUMENT, "k must be");
  ExpectError(search([](SearchRequest* r) { r->set_k(101); }), grpc::StatusCode::INVALID_ARGUMENT, "maximum of 100");
  ExpectError(search([](SearchRequest* r) { r->add_vector(3); }), grpc::StatusCode::INVALID_ARGUMENT,
              "vector has 3 floats");
  ExpectError(search([](SearchRequest* r) { r->clear_vector(); }), grpc::StatusCode::INVALID_ARGUMENT,
              "vector has 0 floats");
  ExpectError(search([](SearchRequest* r) { r->set_vector(1, std::numeric_limits<float>::infinity()); }),
              grpc::StatusCode::INVALID_ARGUMENT, "vector[1]");
  ExpectError(search([](SearchRequest* r) { r->set_collection("zz"); }), grpc::StatusCode::NOT_FOUND, "zz");
  ExpectError(search([](SearchRequest* r) { r->mutable_filter(); }), grpc::StatusCode::INVALID_ARGUMENT,
              "filter has no condition");
  ExpectError(search([](SearchRequest* r) { r->mutable_params()->set_itopk(5000); }), grpc::StatusCode::INVALID_ARGUMENT,
              "params.itopk");
  ExpectError(search([](SearchRequest* r) { r->mutable_params()->set_search_width(65); }),
              grpc::StatusCode::INVALID_ARGUMENT, "params.search_width");
  ExpectError(search([](SearchRequest* r) { r->mutable_params()->set_refine_factor(65); }),
              grpc::StatusCode::INVALID_ARGUMENT, "params.refine_factor");
  ExpectError(search([](SearchRequest* r) { r->mutable_filter()->mutable_not_()->mutable_range()->set_key("x"); }),
              grpc::StatusCode::INVALID_ARGUMENT, "filter.not.range has no bound");

  auto batch = [&](std::function<void(SearchBatchRequest*)> edit) {
    SearchBatchRequest r;
    r.set_collection("c");
    r.set_k(1);
    for (int i = 0; i < 3; ++i) {
      auto* v = r.add_queries();
      v->add_values(1);
      v->add_values(2);
    }
    edit(&r);
    SearchBatchResponse resp;
    grpc::ClientContext ctx;
    return server_.points->SearchBatch(&ctx, r, &resp);
  };
  EXPECT_TRUE(batch([](SearchBatchRequest*) {}).ok());
  ExpectError(batch([](SearchBatchRequest* r) { r->clear_queries(); }), grpc::StatusCode::INVALID_ARGUMENT,
              "queries is empty");
  ExpectError(batch([](SearchBatchRequest* r) { r->mutable_queries(1)->add_values(0); }),
              grpc::StatusCode::INVALID_ARGUMENT, "queries[1].values");
  ExpectError(batch([](SearchBatchRequest* r) {
                for (int i = 0; i < 60; ++i) *r->add_queries() = r->queries(0);
              }),
              grpc::StatusCode::INVALID_ARGUMENT, "above the maximum of 50");
  ExpectError(batch([](SearchBatchRequest* r) { r->set_k(0); }), grpc::StatusCode::INVALID_ARGUMENT, "k must be");
}

// A GRAPH collection through the API: sealed segments get their graphs in
// the background, Get reports the index memory, and a search with per-request
// beam settings finds each stored point first.
TEST_F(ApiTest, GraphCollectionIndexesSealedSegmentsAndFindsItsPoints) {
  const uint32_t dim = 8;
  {
    CreateCollectionRequest req;
    req.mutable_config()->set_name("g");
    req.mutable_config()->set_dimension(dim);
    req.mutable_config()->set_metric(COSINE);
    req.mutable_config()->set_segment_max_points(100);
    req.mutable_config()->mutable_index()->set_type(GRAPH);
    req.mutable_config()->mutable_index()->mutable_graph()->set_degree(8);
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.collections->Create(&ctx, req, &resp).ok());
  }
  const auto vectors = quiver::testing::RandomVectors(450, dim, 31);
  for (uint64_t b = 0; b < 450; b += 150) {
    UpsertRequest up;
    up.set_collection("g");
    for (uint64_t i = b; i < b + 150; ++i) {
      *up.add_points() = MakePoint(i, {vectors.begin() + long(i * dim), vectors.begin() + long((i + 1) * dim)});
    }
    ASSERT_TRUE(Upsert(up).ok());
  }
  GetCollectionResponse info;
  for (int tries = 0; tries < 600; ++tries) {  // the builds run in the background
    GetCollectionRequest g;
    g.set_name("g");
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.collections->Get(&ctx, g, &info).ok());
    if (info.collection().indexed_segments() == 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(info.collection().sealed_segments(), 4u);
  ASSERT_EQ(info.collection().indexed_segments(), 4u);
  // 8 edges of 4 bytes and 8 one-byte codes per vector, plus small upper layers.
  EXPECT_GE(info.collection().index_bytes_per_vector(), 8 * 4 + 8);
  EXPECT_LT(info.collection().index_bytes_per_vector(), 2 * (8 * 4 + 8) + 16);
  for (uint64_t id : {0, 123, 399, 449}) {
    SearchRequest r;
    r.set_collection("g");
    r.mutable_vector()->Add(vectors.begin() + long(id * dim), vectors.begin() + long((id + 1) * dim));
    r.set_k(3);
    r.mutable_params()->set_itopk(16);
    r.mutable_params()->set_search_width(2);
    SearchResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.points->Search(&ctx, r, &resp).ok());
    ASSERT_EQ(resp.hits_size(), 3);
    EXPECT_EQ(resp.hits(0).id(), id);
    EXPECT_NEAR(resp.hits(0).score(), 1.0, 1e-5);
  }
}

// Cluster.RestoreBackup: collections come back from a backup while the node
// serves, as new collections written through the log; every bad request is
// refused before the first write.
TEST_F(ApiTest, RestoreBackupRecreatesCollectionsWhileServing) {
  const size_t n = 1200, dim = 4;  // above max_points_per_request (500): several log entries
  ASSERT_TRUE(CreateCollection("docs", dim, COSINE, IVF_FLAT).ok());
  ASSERT_TRUE(CreateCollection("other", 2).ok());
  auto vectors = quiver::testing::RandomVectors(n, dim, 9);
  for (size_t start = 0; start < n; start += 400) {
    UpsertRequest up;
    up.set_collection("docs");
    for (size_t i = start; i < start + 400; ++i) {
      Point p = MakePoint(i * 7, {vectors.begin() + long(i * dim), vectors.begin() + long((i + 1) * dim)});
      if (i % 3 == 0) (*p.mutable_payload())["tag"].set_string_value("t" + std::to_string(i));
      *up.add_points() = p;
    }
    ASSERT_TRUE(Upsert(up).ok());
  }
  UpsertRequest other;
  other.set_collection("other");
  *other.add_points() = MakePoint(1, {1, 2});
  ASSERT_TRUE(Upsert(other).ok());
  {
    CreateBackupRequest req;
    req.set_name("b1");
    CreateBackupResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.cluster->CreateBackup(&ctx, req, &resp).ok());
  }
  // Changes after the backup are not restored.
  UpsertRequest later;
  later.set_collection("docs");
  *later.add_points() = MakePoint(999999, {1, 1, 1, 1});
  ASSERT_TRUE(Upsert(later).ok());
  auto restore = [&](const std::string& name, std::vector<std::string> collections, const std::string& suffix,
                     RestoreBackupResponse* resp) {
    RestoreBackupRequest req;
    req.set_name(name);
    for (const auto& c : collections) req.add_collections(c);
    req.set_rename_suffix(suffix);
    grpc::ClientContext ctx;
    return server_.cluster->RestoreBackup(&ctx, req, resp);
  };
  auto collection_names = [&] {
    ListCollectionsResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(server_.collections->List(&ctx, {}, &resp).ok());
    std::vector<std::string> names;
    for (const auto& c : resp.collections()) names.push_back(c.config().name());
    return names;
  };
  const std::vector<std::string> before = collection_names();
  RestoreBackupResponse resp;
  ExpectError(restore("nope", {}, "", &resp), grpc::StatusCode::NOT_FOUND, "nope");
  ExpectError(restore("../b1", {}, "", &resp), grpc::StatusCode::INVALID_ARGUMENT, "backup name");
  ExpectError(restore("b1", {}, "", &resp), grpc::StatusCode::ALREADY_EXISTS, "'docs' exists");
  ExpectError(restore("b1", {"missing"}, "_r", &resp), grpc::StatusCode::NOT_FOUND, "missing");
  ExpectError(restore("b1", {"docs", "docs"}, "_r", &resp), grpc::StatusCode::INVALID_ARGUMENT, "twice");
  ExpectError(restore("b1", {"docs"}, "/x", &resp), grpc::StatusCode::INVALID_ARGUMENT, "rename_suffix");
  EXPECT_EQ(collection_names(), before) << "a refused restore changes nothing";

  ASSERT_TRUE(restore("b1", {"docs"}, "_r", &resp).ok());
  ASSERT_EQ(resp.collections_size(), 1);
  EXPECT_EQ(resp.collections(0).source(), "docs");
  EXPECT_EQ(resp.collections(0).target(), "docs_r");
  EXPECT_EQ(resp.collections(0).points(), n);
  EXPECT_GT(resp.applied_index(), 0u);
  EXPECT_EQ(Count("docs_r"), n);
  EXPECT_EQ(Count("docs"), n + 1);
  {
    GetCollectionRequest req;
    req.set_name("docs_r");
    GetCollectionResponse got;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.collections->Get(&ctx, req, &got).ok());
    EXPECT_EQ(got.collection().config().metric(), COSINE);
    EXPECT_EQ(got.collection().config().index().type(), IVF_FLAT);
  }
  // The same vectors and payloads under the same ids.
  GetPointsRequest get;
  get.set_collection("docs_r");
  get.set_with_vector(true);
  get.set_with_payload(true);
  for (uint64_t i : {0, 1, 3, 599, 1199}) get.add_ids(i * 7);
  GetPointsResponse points;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.points->Get(&ctx, get, &points).ok());
  }
  ASSERT_EQ(points.points_size(), 5);
  for (const auto& p : points.points()) {
    const size_t i = p.id() / 7;
    ASSERT_EQ(p.vector_size(), int(dim));
    for (size_t j = 0; j < dim; ++j) EXPECT_EQ(p.vector(int(j)), vectors[i * dim + j]) << p.id();
    if (i % 3 == 0) {
      ASSERT_EQ(p.payload().count("tag"), 1u) << p.id();
      EXPECT_EQ(p.payload().at("tag").string_value(), "t" + std::to_string(i));
    } else {
      EXPECT_TRUE(p.payload().empty()) << p.id();
    }
  }
  // The restored collection takes writes, and restoring everything without
  // a suffix works once the originals are gone.
  UpsertRequest more;
  more.set_collection("docs_r");
  *more.add_points() = MakePoint(5, {0, 0, 0, 1});
  ASSERT_TRUE(Upsert(more).ok());
  EXPECT_EQ(Count("docs_r"), n + 1);
  for (const char* name : {"docs", "other"}) {
    DeleteCollectionRequest req;
    req.set_name(name);
    DeleteCollectionResponse del;
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.collections->Delete(&ctx, req, &del).ok());
  }
  ASSERT_TRUE(restore("b1", {}, "", &resp).ok());
  EXPECT_EQ(resp.collections_size(), 2);
  EXPECT_EQ(Count("docs"), n);
  EXPECT_EQ(Count("other"), 1u);
}

TEST_F(ApiTest, BadIdRequests) {
  ASSERT_TRUE(CreateCollection("c", 2).ok());
  GetPointsRequest g;
  g.set_collection("c");
  GetPointsResponse gr;
  grpc::ClientContext ctx;
  ExpectError(server_.points->Get(&ctx, g, &gr), grpc::StatusCode::INVALID_ARGUMENT, "ids is empty");
  DeletePointsRequest d;
  d.set_collection("zz");
  d.add_ids(1);
  DeletePointsResponse dr;
  grpc::ClientContext ctx2;
  ExpectError(server_.points->Delete(&ctx2, d, &dr), grpc::StatusCode::NOT_FOUND, "zz");
}

// Upsert's command bytes (the head, then a second upsert_points holding the
// vectors) parse as the command built field by field, for vector sections
// whose lengths take one, two, three and four varint bytes, with and without
// payloads.
TEST(EncodeUpsertCommand, ParsesAsTheWholeCommand) {
  struct Case {
    int n;
    uint32_t dim;
    bool payloads;
  };
  for (const Case c : {Case{1, 1, false}, Case{3, 5, true}, Case{40, 17, false}, Case{100, 128, false},
                       Case{1000, 600, true}}) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + " dim=" + std::to_string(c.dim));
    std::mt19937_64 rng(static_cast<uint64_t>(c.n) * 31 + c.dim);
    std::uniform_real_distribution<float> value(-1.f, 1.f);
    UpsertRequest req;
    quiver::internal::v1::Command head;
    head.set_client_id("client-7");
    head.set_sequence(42);
    auto* up = head.mutable_upsert_points();
    up->set_collection("c");
    up->set_dimension(c.dim);
    up->set_collection_created_at(9);
    std::string vectors;
    for (int i = 0; i < c.n; ++i) {
      Point* p = req.add_points();
      const uint64_t id = rng();
      p->set_id(id);
      for (uint32_t d = 0; d < c.dim; ++d) p->add_vector(value(rng));
      up->mutable_ids()->append(reinterpret_cast<const char*>(&id), 8);  // little-endian host, as the server
      vectors.append(reinterpret_cast<const char*>(p->vector().data()), c.dim * sizeof(float));
      if (c.payloads) up->add_payloads(i % 2 == 0 ? "" : "payload " + std::to_string(i));
    }
    quiver::internal::v1::Command expected = head;
    expected.mutable_upsert_points()->set_vectors(vectors);

    quiver::internal::v1::Command parsed;
    ASSERT_TRUE(parsed.ParseFromString(EncodeUpsertCommand(head, req, c.dim)));
    EXPECT_EQ(parsed.SerializeAsString(), expected.SerializeAsString());
    EXPECT_EQ(parsed.upsert_points().vectors().size(), size_t(c.n) * c.dim * sizeof(float));
    EXPECT_EQ(parsed.upsert_points().payloads_size(), c.payloads ? c.n : 0);
  }
}

TEST(ServerLifecycle, StateSurvivesRestartInProcess) {
  quiver::testing::TempDir dir;
  ServerConfig cfg;
  cfg.data_dir = dir.path() + "/d";
  {
    InProcessServer s(cfg);
    CreateCollectionRequest req;
    req.mutable_config()->set_name("c");
    req.mutable_config()->set_dimension(2);
    req.mutable_config()->set_metric(IP);
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(s.collections->Create(&ctx, req, &resp).ok());
    UpsertRequest up;
    up.set_collection("c");
    auto* p = up.add_points();
    p->set_id(77);
    p->add_vector(0.5f);
    p->add_vector(0.25f);
    UpsertResponse ur;
    grpc::ClientContext ctx2;
    ASSERT_TRUE(s.points->Upsert(&ctx2, up, &ur).ok());
    ASSERT_TRUE(s.Stop().ok());
  }
  InProcessServer s(cfg);
  GetPointsRequest g;
  g.set_collection("c");
  g.add_ids(77);
  g.set_with_vector(true);
  GetPointsResponse gr;
  grpc::ClientContext ctx;
  ASSERT_TRUE(s.points->Get(&ctx, g, &gr).ok());
  ASSERT_EQ(gr.points_size(), 1);
  EXPECT_EQ(gr.points(0).vector(1), 0.25f);
}

}  // namespace
}  // namespace quiver::service

// ---- API keys ----

namespace quiver::service {
namespace {

using namespace quiver::v1;  // NOLINT

class ApiKeyTest : public ::testing::Test {
 protected:
  static ServerConfig Config() {
    ServerConfig cfg;
    cfg.api_key = "rw-secret";
    cfg.read_only_api_key = "ro-secret";
    return cfg;
  }
  ApiKeyTest() : server_(Config()) {}

  // A context carrying `key` as `style` metadata ("bearer", "api-key" or none).
  static std::unique_ptr<grpc::ClientContext> Context(const std::string& style, const std::string& key) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (style == "bearer") ctx->AddMetadata("authorization", "Bearer " + key);
    if (style == "api-key") ctx->AddMetadata("api-key", key);
    return ctx;
  }
  grpc::Status Create(const std::string& style, const std::string& key, const std::string& name) {
    CreateCollectionRequest req;
    req.mutable_config()->set_name(name);
    req.mutable_config()->set_dimension(2);
    req.mutable_config()->set_metric(L2);
    CreateCollectionResponse resp;
    return server_.collections->Create(Context(style, key).get(), req, &resp);
  }
  grpc::Status List(const std::string& style, const std::string& key, int* count = nullptr) {
    ListCollectionsRequest req;
    ListCollectionsResponse resp;
    auto st = server_.collections->List(Context(style, key).get(), req, &resp);
    if (count != nullptr) *count = resp.collections_size();
    return st;
  }
  grpc::Status Search(const std::string& style, const std::string& key) {
    SearchRequest req;
    req.set_collection("c");
    req.set_k(1);
    req.add_vector(0);
    req.add_vector(0);
    SearchResponse resp;
    return server_.points->Search(Context(style, key).get(), req, &resp);
  }

  quiver::testing::InProcessServer server_;
};

TEST_F(ApiKeyTest, MissingOrWrongKeyIsUnauthenticatedAndChangesNothing) {
  for (const auto& [style, key] : std::vector<std::pair<std::string, std::string>>{
           {"none", ""}, {"bearer", "wrong"}, {"api-key", "wrong"}, {"bearer", "rw-secre"}, {"bearer", ""}}) {
    auto st = Create(style, key, "c");
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << style << " '" << key << "': " << st.error_message();
    EXPECT_EQ(List(style, key).error_code(), grpc::StatusCode::UNAUTHENTICATED) << style << " '" << key << "'";
  }
  EXPECT_NE(Create("none", "", "c").error_message().find("authorization: Bearer"), std::string::npos);
  int count = -1;
  ASSERT_TRUE(List("bearer", "rw-secret", &count).ok());
  EXPECT_EQ(count, 0) << "refused calls created nothing";
}

TEST_F(ApiKeyTest, ReadOnlyKeyReadsButCannotWrite) {
  ASSERT_TRUE(Create("bearer", "rw-secret", "c").ok());
  auto st = Create("bearer", "ro-secret", "d");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_EQ(Create("api-key", "ro-secret", "d").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  UpsertRequest up;
  up.set_collection("c");
  auto* p = up.add_points();
  p->set_id(1);
  p->add_vector(1);
  p->add_vector(2);
  UpsertResponse up_resp;
  EXPECT_EQ(server_.points->Upsert(Context("bearer", "ro-secret").get(), up, &up_resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  int count = -1;
  EXPECT_TRUE(List("bearer", "ro-secret", &count).ok());
  EXPECT_EQ(count, 1) << "the denied create changed nothing";
  EXPECT_TRUE(Search("api-key", "ro-secret").ok());
  EXPECT_TRUE(Search("bearer", "rw-secret").ok());
  EXPECT_EQ(Search("none", "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_TRUE(server_.points->Upsert(Context("api-key", "rw-secret").get(), up, &up_resp).ok());
}

TEST(ApiKeyConfig, ReadOnlyKeyNeedsAReadWriteKey) {
  ServerConfig cfg;
  cfg.read_only_api_key = "ro";
  EXPECT_NE(cfg.Validate().message().find("api_key"), std::string::npos);
  cfg.api_key = "ro";
  EXPECT_NE(cfg.Validate().message().find("must differ"), std::string::npos);
  cfg.api_key = "rw";
  EXPECT_TRUE(cfg.Validate().ok());
}

}  // namespace
}  // namespace quiver::service

// ---- TLS ----

namespace quiver::service {
namespace {

// Lists collections over a TLS channel trusting `ca`, presenting the client
// certificate if `client_cert`.
grpc::Status ListOverTls(int port, const std::string& ca, const quiver::testing::TlsFiles* client_cert) {
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = ca;
  if (client_cert != nullptr) {
    opts.pem_private_key = client_cert->Read("client.key");
    opts.pem_cert_chain = client_cert->Read("client.pem");
  }
  auto channel = grpc::CreateChannel("localhost:" + std::to_string(port), grpc::SslCredentials(opts));
  auto stub = Collections::NewStub(channel);
  ListCollectionsRequest req;
  ListCollectionsResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return stub->List(&ctx, req, &resp);
}

grpc::Status ListInPlaintext(int port) {
  auto stub = Collections::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  ListCollectionsRequest req;
  ListCollectionsResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return stub->List(&ctx, req, &resp);
}

TEST(Tls, HandshakeWithTheCaSucceedsAndWithoutItFails) {
  if (!quiver::testing::HaveOpensslTool()) GTEST_SKIP() << "no openssl tool to make certificates";
  quiver::testing::TlsFiles tls;
  ServerConfig cfg;
  cfg.tls_cert_file = tls.Path("server.pem");
  cfg.tls_key_file = tls.Path("server.key");
  quiver::testing::InProcessServer server(cfg);
  EXPECT_TRUE(ListOverTls(server.grpc_port(), tls.Read("ca.pem"), nullptr).ok());
  EXPECT_EQ(ListOverTls(server.grpc_port(), tls.Read("other.pem"), nullptr).error_code(),
            grpc::StatusCode::UNAVAILABLE) << "a server certificate from an unknown CA is refused";
  EXPECT_EQ(ListInPlaintext(server.grpc_port()).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "plaintext is not served on a TLS port";
}

TEST(Tls, MutualTlsRequiresAClientCertificate) {
  if (!quiver::testing::HaveOpensslTool()) GTEST_SKIP() << "no openssl tool to make certificates";
  quiver::testing::TlsFiles tls;
  ServerConfig cfg;
  cfg.tls_cert_file = tls.Path("server.pem");
  cfg.tls_key_file = tls.Path("server.key");
  cfg.tls_client_ca_file = tls.Path("ca.pem");
  quiver::testing::InProcessServer server(cfg);
  EXPECT_TRUE(ListOverTls(server.grpc_port(), tls.Read("ca.pem"), &tls).ok());
  EXPECT_EQ(ListOverTls(server.grpc_port(), tls.Read("ca.pem"), nullptr).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "no client certificate";
}

TEST(Tls, ConfigNeedsCertificateAndKeyTogether) {
  ServerConfig cfg;
  cfg.tls_cert_file = "/x.pem";
  EXPECT_NE(cfg.Validate().message().find("tls_cert_file and tls_key_file"), std::string::npos);
  cfg.tls_cert_file.clear();
  cfg.tls_client_ca_file = "/ca.pem";
  EXPECT_NE(cfg.Validate().message().find("tls_client_ca_file"), std::string::npos);
}

}  // namespace
}  // namespace quiver::service
