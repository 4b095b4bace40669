// cuDNN's fused scaled-dot-product attention (flash attention on Hopper's tensor-core
// instructions), built with cuDNN's frontend graph API and exposed to Rust as a C function
// (src/cuda/cudnn/sdpa.rs). One graph per shape and strides, built on first use and cached in a
// per-thread cache object that Rust owns. A built graph can be serialized (its compiled kernel
// with it) and loaded in a later process instead of being built again (src/cuda/plan_cache.rs
// keeps the bytes on disk).
//
// Inputs q [b, h, s_q, d], k and v [b, h, s_kv, d] and the output o are given by dims and
// strides in that order (any layout with a dense last dim: the UNet passes views of a stacked
// [b, s, 3, h, d] projection); f16 in and out, f32 softmax; scale 1/sqrt(d); no mask.
#include <cudnn_frontend.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

namespace fe = cudnn_frontend;

namespace {

struct Key {
    int64_t dims[5];  // b, h, s_q, s_kv, d
    int64_t strides[4][4];  // q, k, v, o

    bool operator==(Key const& other) const { return std::memcmp(this, &other, sizeof(Key)) == 0; }
};

struct Entry {
    Key key;
    std::shared_ptr<fe::graph::Graph> graph;
    int64_t workspace;
    // The graph as the frontend serializes it (its compiled kernel included), made on request.
    std::vector<uint8_t> serialized;
};

struct Cache {
    std::vector<Entry> entries;
};

int fail(char* message, size_t len, std::string const& what) {
    std::snprintf(message, len, "%s", what.c_str());
    return 1;
}

std::vector<int64_t> row(int64_t const* values) { return std::vector<int64_t>(values, values + 4); }

// Builds the graph for `key`; 0, or 1 with a message.
int build(cudnnHandle_t handle, Key const& key, Entry& entry, char* message, size_t len) {
    int64_t const b = key.dims[0], h = key.dims[1], s_q = key.dims[2], s_kv = key.dims[3], d = key.dims[4];
    auto graph = std::make_shared<fe::graph::Graph>();
    graph->set_io_data_type(fe::DataType_t::HALF)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto tensor = [&](char const* name, int64_t s, int which) {
        return graph->tensor(fe::graph::Tensor_attributes()
                                 .set_name(name)
                                 .set_uid(which + 1)
                                 .set_dim({b, h, s, d})
                                 .set_stride(row(key.strides[which])));
    };
    auto q = tensor("q", s_q, 0);
    auto k = tensor("k", s_kv, 1);
    auto v = tensor("v", s_kv, 2);
    auto options = fe::graph::SDPA_attributes()
                       .set_name("sdpa")
                       .set_generate_stats(false)
                       .set_attn_scale(1.0f / std::sqrt(static_cast<float>(d)));
    auto [o, stats] = graph->sdpa(q, k, v, options);
    (void)stats;
    o->set_output(true).set_uid(4).set_dim({b, h, s_q, d}).set_stride(row(key.strides[3]));

    auto checked = [&](fe::error_t status, char const* step) {
        if (status.is_good()) return true;
        std::snprintf(message, len, "cuDNN attention (%s): %s", step, status.get_message().c_str());
        return false;
    };
    if (!checked(graph->validate(), "validate") || !checked(graph->build_operation_graph(handle), "operation graph") ||
        !checked(graph->create_execution_plans({fe::HeurMode_t::A}), "execution plans") ||
        !checked(graph->check_support(handle), "support") ||
        !checked(graph->build_plans(handle, fe::BuildPlanPolicy_t::HEURISTICS_CHOICE), "build plans")) {
        return 1;
    }
    int64_t workspace = 0;
    if (!checked(graph->get_workspace_size(workspace), "workspace size")) return 1;
    entry = Entry{key, graph, workspace, {}};
    return 0;
}

// The graph for `key` from what candlewick_sdpa_serialized gave in an earlier process; 0, or 1
// when this cuDNN cannot load it (the caller then builds the graph). A damaged file makes the
// frontend's parser throw: that too is a 1 here, never a failure of the attention (which would
// send the shape to FlashAttention-2 and change the image).
int load(cudnnHandle_t handle, Key const& key, uint8_t const* data, size_t len, Entry& entry) {
    try {
        auto graph = std::make_shared<fe::graph::Graph>();
        std::vector<uint8_t> blob(data, data + len);
        // No warm-up capture: the first call runs eagerly before any CUDA graph is captured.
        if (graph->deserialize(handle, blob, false, false).is_bad()) return 1;
        int64_t workspace = 0;
        if (graph->get_workspace_size(workspace).is_bad()) return 1;
        entry = Entry{key, graph, workspace, std::move(blob)};
        return 0;
    } catch (...) {
        return 1;
    }
}

Key make_key(int64_t const dims[5], int64_t const strides[16]) {
    Key key{};
    std::memcpy(key.dims, dims, sizeof key.dims);
    std::memcpy(key.strides, strides, sizeof key.strides);
    return key;
}

// Runs `body` (which returns 0, or 1 with a message written), turning C++ exceptions into 1 and
// a message: nothing is thrown across the C interface.
template <typename Body>
int guarded(char* message, size_t len, Body body) {
    try {
        return body();
    } catch (std::exception const& e) {
        return fail(message, len, std::string("cuDNN attention: ") + e.what());
    } catch (...) {
        return fail(message, len, "cuDNN attention: unknown C++ exception");
    }
}

// The cache's entry for `key`, or null.
Entry* find(void* cache, Key const& key) {
    for (auto& entry : static_cast<Cache*>(cache)->entries) {
        if (entry.key == key) return &entry;
    }
    return nullptr;
}

}  // namespace

extern "C" {

void* candlewick_sdpa_cache_new() { return new (std::nothrow) Cache(); }

void candlewick_sdpa_cache_free(void* cache) { delete static_cast<Cache*>(cache); }

// Builds (once) the graph for these dims and strides and reports its workspace; 0 on success,
// 1 with a message when cuDNN cannot run this attention. `stored` (`stored_len` bytes, or null):
// the graph as an earlier process serialized it, loaded instead of building when cuDNN takes it;
// `*built` tells whether the graph was built here (and so is worth storing).
int candlewick_sdpa_prepare(void* cache, cudnnHandle_t handle, int64_t const dims[5], int64_t const strides[16],
                            uint8_t const* stored, size_t stored_len, int64_t* workspace, int* built,
                            char* message, size_t message_len) {
    return guarded(message, message_len, [&] {
        Key key = make_key(dims, strides);
        *built = 0;
        if (Entry const* entry = find(cache, key)) {
            *workspace = entry->workspace;
            return 0;
        }
        Entry entry;
        if (stored == nullptr || load(handle, key, stored, stored_len, entry) != 0) {
            if (build(handle, key, entry, message, message_len) != 0) return 1;
            *built = 1;
        }
        *workspace = entry.workspace;
        static_cast<Cache*>(cache)->entries.push_back(std::move(entry));
        return 0;
    });
}

// The prepared graph for these dims and strides, serialized (valid while the cache lives); 0, or
// 1 with a message when the frontend cannot serialize it.
int candlewick_sdpa_serialized(void* cache, int64_t const dims[5], int64_t const strides[16], uint8_t const** data,
                               size_t* len, char* message, size_t message_len) {
    return guarded(message, message_len, [&] {
        Entry* entry = find(cache, make_key(dims, strides));
        if (entry == nullptr) return fail(message, message_len, "cuDNN attention: no graph prepared for this shape");
        if (entry->serialized.empty()) {
            auto status = entry->graph->serialize(entry->serialized, false);
            if (status.is_bad()) {
                entry->serialized.clear();
                return fail(message, message_len, "cuDNN attention (serialize): " + status.get_message());
            }
        }
        *data = entry->serialized.data();
        *len = entry->serialized.size();
        return 0;
    });
}

// Runs the graph prepared for these dims and strides (candlewick_sdpa_prepare first) on the
// handle's stream.
int candlewick_sdpa_execute(void* cache, cudnnHandle_t handle, int64_t const dims[5], int64_t const strides[16],
                            void* q, void* k, void* v, void* o, void* workspace, char* message,
                            size_t message_len) {
    return guarded(message, message_len, [&] {
        Entry const* entry = find(cache, make_key(dims, strides));
        if (entry == nullptr) return fail(message, message_len, "cuDNN attention: no graph prepared for this shape");
        std::unordered_map<int64_t, void*> pointers = {{1, q}, {2, k}, {3, v}, {4, o}};
        auto status = entry->graph->execute(handle, pointers, workspace);
        if (status.is_bad()) return fail(message, message_len, "cuDNN attention (execute): " + status.get_message());
        return 0;
    });
}

}  // extern "C"
