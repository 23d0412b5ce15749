/* The C SDK's side of the contract's exports: it owns the generated
 * bindings' memory rules (arguments are the callee's to free, returned
 * strings must come from malloc, borrowed handles are dropped for you by
 * the bindings, which `router policy bindings` generates with
 * autodrop-borrows) so that a policy only writes wr_init and wr_select.
 * See wasm_router_policy.h. */
#include <stdlib.h>
#include <string.h>

#include "wasm_router_policy.h"

struct wr_request {
    wasm_router_policy_types_borrow_request_t lent;
    bool has_id, has_text, has_key, has_model;
    uint64_t id;
    routing_policy_string_t text, model;
    bool key_present;
    routing_policy_string_t key;
    /* Header values fetched during the call, freed after it. */
    routing_policy_string_t headers[8];
    size_t header_count;
};

struct wr_candidates {
    wasm_router_policy_types_borrow_candidates_t lent;
    routing_policy_list_u32_t ids, loads, in_flight, weights;
    bool has_ids, has_loads, has_in_flight, has_weights;
};

__attribute__((weak)) void wr_workers_changed(const wasm_router_policy_types_worker_info_t *workers, size_t len) {
    (void)workers;
    (void)len;
}

__attribute__((weak)) void wr_on_complete(const wasm_router_policy_types_outcome_t *outcome) {
    (void)outcome;
}

__attribute__((weak)) void wr_tick(uint64_t now_ms) {
    (void)now_ms;
}

__attribute__((weak)) uint8_t *wr_snapshot(size_t *len) {
    *len = 0;
    return NULL;
}

__attribute__((weak)) const char *wr_restore(const uint8_t *state, size_t len) {
    (void)state;
    (void)len;
    return NULL;
}

void exports_wasm_router_policy_policy_contract_version(routing_policy_string_t *ret) {
    routing_policy_string_dup(ret, "0.2.0");
}

bool exports_wasm_router_policy_policy_init(routing_policy_string_t *config,
                                            exports_wasm_router_policy_policy_policy_info_t *ret,
                                            routing_policy_string_t *err) {
    /* NUL-terminated for the policy's convenience. */
    char *text = malloc(config->len + 1);
    memcpy(text, config->ptr, config->len);
    text[config->len] = 0;
    wr_policy_info info = {.name = "c_policy"};
    const char *refused = wr_init(text, config->len, &info);
    free(text);
    routing_policy_string_free(config);
    if (refused != NULL) {
        routing_policy_string_dup(err, refused);
        return false;
    }
    wasm_router_policy_needs_reads_t reads = 0;
    if (info.reads_headers) reads |= WASM_ROUTER_POLICY_NEEDS_READS_HEADERS;
    if (info.reads_kv_matches) reads |= WASM_ROUTER_POLICY_NEEDS_READS_KV_MATCHES;
    wasm_router_policy_needs_declare(reads);
    routing_policy_string_dup(&ret->name, info.name);
    ret->needs_text = info.needs_text;
    ret->wants_feedback = info.wants_feedback;
    ret->tick_interval_ms = info.tick_interval_ms;
    ret->instances = info.per_thread ? WASM_ROUTER_POLICY_TYPES_INSTANCES_PER_THREAD
                                     : WASM_ROUTER_POLICY_TYPES_INSTANCES_SHARED;
    return true;
}

void exports_wasm_router_policy_policy_workers_changed(exports_wasm_router_policy_policy_list_worker_info_t *workers) {
    wr_workers_changed(workers->ptr, workers->len);
    for (size_t i = 0; i < workers->len; i++) {
        wasm_router_policy_types_worker_info_free(&workers->ptr[i]);
    }
    free(workers->ptr);
}

static void request_free(wr_request *req) {
    if (req->has_text) routing_policy_string_free(&req->text);
    if (req->has_model) routing_policy_string_free(&req->model);
    if (req->has_key && req->key_present) routing_policy_string_free(&req->key);
    for (size_t i = 0; i < req->header_count; i++) routing_policy_string_free(&req->headers[i]);
}

static void candidates_free(wr_candidates *c) {
    if (c->has_ids) routing_policy_list_u32_free(&c->ids);
    if (c->has_loads) routing_policy_list_u32_free(&c->loads);
    if (c->has_in_flight) routing_policy_list_u32_free(&c->in_flight);
    if (c->has_weights) routing_policy_list_u32_free(&c->weights);
}

bool exports_wasm_router_policy_policy_select(exports_wasm_router_policy_policy_borrow_request_t lent_req,
                                              exports_wasm_router_policy_policy_borrow_candidates_t lent_candidates,
                                              uint32_t *ret, routing_policy_string_t *err) {
    wr_request req = {.lent = lent_req};
    wr_candidates candidates = {.lent = lent_candidates};
    const char *declined = wr_select(&req, &candidates, ret);
    request_free(&req);
    candidates_free(&candidates);
    if (declined != NULL) {
        routing_policy_string_dup(err, declined);
        return false;
    }
    return true;
}

void exports_wasm_router_policy_policy_on_complete(exports_wasm_router_policy_policy_outcome_t *outcome) {
    wr_on_complete(outcome);
    wasm_router_policy_types_outcome_free(outcome);
}

void exports_wasm_router_policy_policy_tick(uint64_t now_ms) {
    wr_tick(now_ms);
}

void exports_wasm_router_policy_policy_snapshot(routing_policy_list_u8_t *ret) {
    size_t len = 0;
    uint8_t *state = wr_snapshot(&len);
    ret->ptr = len > 0 ? state : NULL;
    ret->len = len;
    if (len == 0) free(state);
}

bool exports_wasm_router_policy_policy_restore(routing_policy_list_u8_t *state, routing_policy_string_t *err) {
    const char *refused = wr_restore(state->ptr, state->len);
    routing_policy_list_u8_free(state);
    if (refused != NULL) {
        routing_policy_string_dup(err, refused);
        return false;
    }
    return true;
}

uint64_t wr_request_id(wr_request *req) {
    if (!req->has_id) {
        req->id = wasm_router_policy_types_method_request_id(req->lent);
        req->has_id = true;
    }
    return req->id;
}

const char *wr_request_text(wr_request *req, size_t *len) {
    if (!req->has_text) {
        wasm_router_policy_types_method_request_text(req->lent, &req->text);
        req->has_text = true;
    }
    *len = req->text.len;
    return (const char *)req->text.ptr;
}

const char *wr_request_model(wr_request *req, size_t *len) {
    if (!req->has_model) {
        wasm_router_policy_types_method_request_model(req->lent, &req->model);
        req->has_model = true;
    }
    *len = req->model.len;
    return (const char *)req->model.ptr;
}

const char *wr_request_routing_key(wr_request *req, size_t *len) {
    if (!req->has_key) {
        req->key_present = wasm_router_policy_types_method_request_routing_key(req->lent, &req->key);
        req->has_key = true;
    }
    *len = req->key_present ? req->key.len : 0;
    return req->key_present ? (const char *)req->key.ptr : NULL;
}

const char *wr_request_header(wr_request *req, const char *name, size_t *len) {
    size_t slots = sizeof req->headers / sizeof req->headers[0];
    *len = 0;
    if (req->header_count == slots) return NULL;
    routing_policy_string_t key = {.ptr = (uint8_t *)name, .len = strlen(name)};
    routing_policy_string_t *value = &req->headers[req->header_count];
    if (!wasm_router_policy_types_method_request_header(req->lent, &key, value)) return NULL;
    req->header_count++;
    *len = value->len;
    return (const char *)value->ptr;
}

wasm_router_policy_types_borrow_request_t wr_request_lent(wr_request *req) {
    return req->lent;
}

#define COLUMN(field, getter)                                                        \
    const uint32_t *wr_candidates_##field(wr_candidates *c) {                        \
        if (!c->has_##field) {                                                       \
            wasm_router_policy_types_method_candidates_##getter(c->lent, &c->field); \
            c->has_##field = true;                                                   \
        }                                                                            \
        return c->field.ptr;                                                         \
    }
COLUMN(ids, ids)
COLUMN(loads, loads)
COLUMN(in_flight, in_flight)
COLUMN(weights, weights)
#undef COLUMN

size_t wr_candidates_len(wr_candidates *c) {
    wr_candidates_ids(c);
    return c->ids.len;
}

wasm_router_policy_types_borrow_candidates_t wr_candidates_lent(wr_candidates *c) {
    return c->lent;
}

wr_prefix_match wr_match_request(wr_request *req, const uint32_t *workers, size_t len) {
    routing_policy_list_u32_t list = {.ptr = (uint32_t *)workers, .len = len};
    wasm_router_policy_prefix_index_prefix_match_t found;
    wasm_router_policy_prefix_index_match_request(req->lent, &list, &found);
    return (wr_prefix_match){
        .text_chars = found.text_chars,
        .matched_chars = found.matched_chars,
        .has_worker = found.worker.is_some,
        .worker = found.worker.val,
    };
}

void wr_insert_request(wr_request *req, uint32_t worker) {
    wasm_router_policy_prefix_index_insert_request(req->lent, worker);
}

void wr_log(wasm_router_policy_log_level_t level, const char *message) {
    routing_policy_string_t text = {.ptr = (uint8_t *)message, .len = strlen(message)};
    routing_policy_list_tuple2_string_string_t fields = {.ptr = NULL, .len = 0};
    wasm_router_policy_log_write(level, &text, &fields);
}
