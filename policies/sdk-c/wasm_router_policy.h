/* Write wasm-router routing policies in C.
 *
 * A policy is a WebAssembly component the router loads at run time and
 * asks, for every request, which worker should serve it. This header and
 * wasm_router_policy.c hide the component plumbing (routing_policy.h/.c,
 * generated from the contract by wit-bindgen; `router policy bindings
 * --lang c DIR` writes all of them) behind two functions you write, the
 * same shape as the Rust SDK's trait:
 *
 *   const char *wr_init(const char *config, size_t len, wr_policy_info *info);
 *   const char *wr_select(wr_request *req, wr_candidates *c, uint32_t *pick);
 *
 * Each returns NULL on success, or a message: from wr_init it refuses the
 * load, from wr_select it declines the request (a 503 with the message).
 * The SDK copies messages and names, so string literals are fine. The
 * request and candidates are lent for the call: what their getters return
 * lives until wr_select returns, and the SDK drops the borrowed handles
 * itself (the component model traps a call that returns with one left).
 * The optional hooks (wr_workers_changed, wr_on_complete, wr_tick,
 * wr_snapshot, wr_restore) have weak defaults: define one to use it.
 *
 * Build: clang --target=wasm32-wasi -mexec-model=reactor -O2 app.c
 * wasm_router_policy.c routing_policy.c routing_policy_component_type.o
 * -o core.wasm, then `router policy componentize core.wasm -o app.wasm`.
 */
#ifndef WASM_ROUTER_POLICY_H
#define WASM_ROUTER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "routing_policy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a policy tells the router about itself, filled in by wr_init. */
typedef struct {
    /* Short name, shown in logs and GET /policies. */
    const char *name;
    /* The router extracts the routing text (wr_request_text, the prefix index). */
    bool needs_text;
    /* The router calls wr_on_complete after each attempt. */
    bool wants_feedback;
    /* How often the router calls wr_tick; 0 for never. */
    uint32_t tick_interval_ms;
    /* One instance per router thread: for a policy that keeps no state of
     * its own between calls (what it keeps lives in the host's state or
     * prefix index). Otherwise one shared instance. */
    bool per_thread;
    /* The router lends the client's headers (wr_request_header). */
    bool reads_headers;
    /* The router tokenizes the text for prefix-index match-kv. */
    bool reads_kv_matches;
} wr_policy_info;

/* The request being routed, lent for one wr_select. */
typedef struct wr_request wr_request;
/* The workers that may take it (never none), lent for one wr_select. */
typedef struct wr_candidates wr_candidates;

/* You write these two. */
const char *wr_init(const char *config, size_t config_len, wr_policy_info *info);
const char *wr_select(wr_request *req, wr_candidates *candidates, uint32_t *pick);

/* Optional hooks (weak defaults do nothing; snapshot gives nothing). */
void wr_workers_changed(const wasm_router_policy_types_worker_info_t *workers, size_t len);
void wr_on_complete(const wasm_router_policy_types_outcome_t *outcome);
void wr_tick(uint64_t now_ms);
/* Return a malloc'd buffer (the SDK frees it) and its length. */
uint8_t *wr_snapshot(size_t *len);
/* NULL, or a message to start fresh instead. */
const char *wr_restore(const uint8_t *state, size_t len);

/* The request's fields, each fetched from the router when first asked. */
uint64_t wr_request_id(wr_request *req);
/* The routing text (empty unless info.needs_text); not NUL-terminated. */
const char *wr_request_text(wr_request *req, size_t *len);
/* x-routing-key; NULL when absent. */
const char *wr_request_routing_key(wr_request *req, size_t *len);
/* `model` of the body; empty when absent. */
const char *wr_request_model(wr_request *req, size_t *len);
/* The client's header `name`; NULL when absent or not lent. */
const char *wr_request_header(wr_request *req, const char *name, size_t *len);
/* The router's handle, for the generated bindings' functions. */
wasm_router_policy_types_borrow_request_t wr_request_lent(wr_request *req);

/* The candidates' columns, one entry per candidate in the order of ids. */
size_t wr_candidates_len(wr_candidates *c);
const uint32_t *wr_candidates_ids(wr_candidates *c);
/* The higher of the router's in-flight count and the worker's own. */
const uint32_t *wr_candidates_loads(wr_candidates *c);
const uint32_t *wr_candidates_in_flight(wr_candidates *c);
const uint32_t *wr_candidates_weights(wr_candidates *c);
/* The router's handle, for the other columns through the bindings. */
wasm_router_policy_types_borrow_candidates_t wr_candidates_lent(wr_candidates *c);

/* The router's prefix index (prefix-index in wit/policy.wit). */
typedef struct {
    uint64_t text_chars;
    uint64_t matched_chars;
    bool has_worker;
    uint32_t worker;
} wr_prefix_match;
wr_prefix_match wr_match_request(wr_request *req, const uint32_t *workers, size_t len);
void wr_insert_request(wr_request *req, uint32_t worker);

/* A line in the router's log, tagged with the policy's name. */
void wr_log(wasm_router_policy_log_level_t level, const char *message);

#ifdef __cplusplus
}
#endif

#endif
