/*
 * auditproc.h — the auditproc plugin ABI v1 for C (clang, wasm32-wasi,
 * wasi-libc). The contract itself is abi/README.md.
 *
 * Build a plugin as a reactor:
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I abi/c \
 *         -o myplugin.wasm myplugin.c
 *
 * In exactly one source file of the plugin, define AUDITPROC_MAIN before
 * including this header: that file then carries the exports
 * auditproc_abi_v1, auditproc_alloc (one growable buffer), auditproc_init
 * and auditproc_process, which decode the input record and call the two
 * functions the plugin defines:
 *
 *   int auditproc_on_event(const struct auditproc_input *in);   required
 *   int auditproc_on_init(const uint8_t *config, size_t len);   optional
 *
 * auditproc_on_event returns a verdict (AUDITPROC_OK, _DROP, _RETRY,
 * _REJECT); auditproc_on_init returns 0 to accept the configuration (the
 * JSON text of the plugin's config: mapping, "{}" when absent) and anything
 * else to refuse it, after auditproc_set_message_str says why. Every pointer
 * handed to them is valid only during the call.
 */
#ifndef AUDITPROC_H
#define AUDITPROC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AUDITPROC_ABI_VERSION 1

/* Verdicts: what auditproc_on_event returns. */
enum {
	AUDITPROC_OK = 0,     /* go on with the next plugin; ack after the last */
	AUDITPROC_DROP = 1,   /* stop and ack; buffered emits are discarded */
	AUDITPROC_RETRY = 2,  /* fail for now: the event is delivered again later */
	AUDITPROC_REJECT = 3, /* can never succeed: dead-letter it with the message */
};

/* Results of host functions; event_get returns a length when >= 0. */
enum {
	AUDITPROC_RESULT_OK = 0,
	AUDITPROC_ERR_NOT_FOUND = -1,   /* the path does not exist */
	AUDITPROC_ERR_NOT_GRANTED = -2, /* the sink is not granted in plugins.yaml */
	AUDITPROC_ERR_LIMIT = -3,       /* a size or count limit was reached */
	AUDITPROC_ERR_INVALID = -4,     /* bad argument, or not allowed now */
};

/* Log levels. */
enum {
	AUDITPROC_LOG_DEBUG = 0,
	AUDITPROC_LOG_INFO = 1,
	AUDITPROC_LOG_WARN = 2,
	AUDITPROC_LOG_ERROR = 3,
};

/* One decoded input record; every pointer aliases the host's copy, valid
 * only during auditproc_on_event. */
struct auditproc_input {
	uint32_t deliveries; /* 1 on first delivery, more on redelivery */
	const uint8_t *entry_id;
	size_t entry_id_len;
	const uint8_t *stream;
	size_t stream_len;
	const uint8_t *key_id;
	size_t key_id_len;
	const uint8_t *event_id;
	size_t event_id_len;
	const uint8_t *event; /* the event's JSON object text */
	size_t event_len;
};

/* The plugin's functions, called by the exports. auditproc_on_init is weak:
 * a plugin without a configuration leaves it out and every configuration is
 * accepted. */
int auditproc_on_event(const struct auditproc_input *in);
__attribute__((weak)) int auditproc_on_init(const uint8_t *config, size_t len);

#define AUDITPROC_IMPORT(name) \
	__attribute__((import_module("auditproc"), import_name(name)))

/* Host functions (import module "auditproc"). */
AUDITPROC_IMPORT("log")
void auditproc_log(int32_t level, const void *msg, size_t len);
AUDITPROC_IMPORT("set_message")
void auditproc_set_message(const void *msg, size_t len);
AUDITPROC_IMPORT("set_event")
int32_t auditproc_set_event(const void *event, size_t len);
AUDITPROC_IMPORT("emit")
int32_t auditproc_emit(const void *sink, size_t sink_len, const void *event, size_t len);
AUDITPROC_IMPORT("event_get")
int32_t auditproc_event_get(const void *path, size_t path_len, void *out, size_t out_cap);
AUDITPROC_IMPORT("event_set")
int32_t auditproc_event_set(const void *path, size_t path_len, const void *value, size_t value_len);
AUDITPROC_IMPORT("event_delete")
int32_t auditproc_event_delete(const void *path, size_t path_len);

/* Conveniences for NUL-terminated strings. */
static inline void auditproc_log_str(int32_t level, const char *msg) {
	auditproc_log(level, msg, strlen(msg));
}
static inline void auditproc_set_message_str(const char *msg) {
	auditproc_set_message(msg, strlen(msg));
}
static inline int32_t auditproc_emit_str(const char *sink, const void *event, size_t len) {
	return auditproc_emit(sink, strlen(sink), event, len);
}
static inline int32_t auditproc_event_get_str(const char *path, void *out, size_t out_cap) {
	return auditproc_event_get(path, strlen(path), out, out_cap);
}
static inline int32_t auditproc_event_set_str(const char *path, const char *json_value) {
	return auditproc_event_set(path, strlen(path), json_value, strlen(json_value));
}
static inline int32_t auditproc_event_delete_str(const char *path) {
	return auditproc_event_delete(path, strlen(path));
}

#ifdef AUDITPROC_MAIN
#include <stdlib.h>

#define AUDITPROC_EXPORT(name) __attribute__((export_name(name)))

/* One growable buffer serves every auditproc_alloc: the host writes the
 * configuration or an input record into it right before the call that reads
 * it, and nothing in it outlives that call. */
static uint8_t *auditproc_input_buf;
static size_t auditproc_input_cap;

AUDITPROC_EXPORT("auditproc_abi_v1")
void auditproc_abi_v1(void) {}

/* The buffer below is only replaced by a larger one in auditproc_alloc, so
 * the host may reuse it for a record no larger than the last without
 * calling auditproc_alloc: one guest call per event instead of two. */
AUDITPROC_EXPORT("auditproc_alloc_reuse")
void auditproc_alloc_reuse(void) {}

AUDITPROC_EXPORT("auditproc_alloc")
uint8_t *auditproc_alloc(int32_t size) {
	if (size < 0)
		return NULL;
	if ((size_t)size > auditproc_input_cap || auditproc_input_buf == NULL) {
		size_t cap = auditproc_input_cap ? auditproc_input_cap : 4096;
		while (cap < (size_t)size)
			cap *= 2;
		/* realloc would copy bytes nobody needs; the old content is dead. */
		uint8_t *b = malloc(cap);
		if (b == NULL)
			return NULL;
		free(auditproc_input_buf);
		auditproc_input_buf = b;
		auditproc_input_cap = cap;
	}
	return auditproc_input_buf;
}

AUDITPROC_EXPORT("auditproc_init")
int32_t auditproc_init(const uint8_t *config, int32_t len) {
	if (!auditproc_on_init)
		return 0;
	return auditproc_on_init(config, (size_t)len);
}

static uint32_t auditproc_le32_(const uint8_t *p) {
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

AUDITPROC_EXPORT("auditproc_process")
int32_t auditproc_process(const uint8_t *rec, int32_t len) {
	static const char bad[] = "auditproc: input record truncated or inconsistent";
	if (len < 24) {
		auditproc_set_message(bad, sizeof bad - 1);
		return AUDITPROC_RETRY;
	}
	uint64_t lens[5], total = 0;
	for (int i = 0; i < 5; i++) {
		lens[i] = auditproc_le32_(rec + 4 + 4 * i);
		total += lens[i];
	}
	if (total != (uint64_t)len - 24) {
		auditproc_set_message(bad, sizeof bad - 1);
		return AUDITPROC_RETRY;
	}
	struct auditproc_input in;
	const uint8_t *p = rec + 24;
	in.deliveries = auditproc_le32_(rec);
	in.entry_id = p, in.entry_id_len = lens[0], p += lens[0];
	in.stream = p, in.stream_len = lens[1], p += lens[1];
	in.key_id = p, in.key_id_len = lens[2], p += lens[2];
	in.event_id = p, in.event_id_len = lens[3], p += lens[3];
	in.event = p, in.event_len = lens[4];
	return auditproc_on_event(&in);
}
#endif /* AUDITPROC_MAIN */

#ifdef __cplusplus
}
#endif

#endif /* AUDITPROC_H */
