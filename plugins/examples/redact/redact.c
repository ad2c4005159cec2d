/*
 * redact masks secrets in audit events before later plugins and sinks see
 * them: the values of configured field names and of secret-looking names
 * (password, token, api_key…), and, inside any string or number, payment
 * card numbers (Luhn-valid, with a card network prefix), bearer tokens and
 * JWTs. See README.md for the configuration.
 *
 * It scans the event's bytes once, without building a tree: a stack of one
 * byte per nesting level tracks where it is. Strings are searched for their
 * closing quote eight bytes at a time; a string without escapes is inspected
 * where it lies, one with escapes is unescaped first (so "pass\u0077ord" is
 * a password key) and re-encoded only when something in it is masked. A key
 * is looked up in a hash table of the configured names and searched for the
 * secret words in one pass; only strings long enough to hold a card number
 * or a token are searched for them. An event where nothing matches is passed
 * on untouched, with no host call; otherwise the masked copy replaces it
 * with one set_event.
 */
#define AUDITPROC_MAIN
#include "auditproc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Deeper events are rejected: a redactor that cannot see every value must
 * not pass the event on. */
#define MAX_DEPTH 512
#define MAX_FIELDS 256
/* Slots of the field-name hash table: a power of two, more than MAX_FIELDS,
 * so a probe always ends at an empty slot. */
#define FIELD_SLOTS 512

/* ---- growable byte buffers ------------------------------------------ */

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static bool buf_reserve(struct buf *b, size_t n) {
	if (b->len + n <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 1024;
	while (cap < b->len + n)
		cap *= 2;
	uint8_t *p = realloc(b->p, cap);
	if (p == NULL)
		return false;
	b->p = p;
	b->cap = cap;
	return true;
}

static bool buf_add(struct buf *b, const void *p, size_t n) {
	if (!buf_reserve(b, n))
		return false;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return true;
}

static bool buf_addc(struct buf *b, uint8_t c) { return buf_add(b, &c, 1); }

/* ---- configuration --------------------------------------------------- */

static struct {
	char *fields[MAX_FIELDS]; /* lowercased field names */
	size_t field_lens[MAX_FIELDS];
	size_t nfields;
	uint16_t slots[FIELD_SLOTS]; /* field index + 1; 0 is an empty slot */
	uint64_t lens;               /* bit min(length, 63) of every field name */
	struct buf mask_json; /* the mask as a JSON string, quotes included */
	struct buf mask;      /* the mask's text */
	bool secret_names, card_numbers, bearer_tokens;
} cfg;

static uint8_t lower(uint8_t c) { return (uint8_t)(c - 'A') < 26 ? c + 32 : c; }
static bool is_digit(uint8_t c) { return (uint8_t)(c - '0') < 10; }
static bool is_alnum(uint8_t c) { return is_digit(c) || (uint8_t)((c | 0x20) - 'a') < 26; }
static bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* norm_of: a key name's byte as secret_name compares it, built by the
 * compiler: 0 for the separators _ - . and space (left out), lowercase for
 * letters, 0xFF for NUL (kept, and no letter) and the byte otherwise. */
#define NORM1(c)                                                                    \
	(((c) == '_' || (c) == '-' || (c) == '.' || (c) == ' ') ? 0                     \
	 : ((c) >= 'A' && (c) <= 'Z') ? (uint8_t)((c) + 32) : (c) == 0 ? 0xFF : (uint8_t)(c))
#define TABLE4(f, c) f(c), f((c) + 1), f((c) + 2), f((c) + 3)
#define TABLE16(f, c) TABLE4(f, c), TABLE4(f, (c) + 4), TABLE4(f, (c) + 8), TABLE4(f, (c) + 12)
#define TABLE64(f, c) TABLE16(f, c), TABLE16(f, (c) + 16), TABLE16(f, (c) + 32), TABLE16(f, (c) + 48)
#define TABLE256(f) TABLE64(f, 0), TABLE64(f, 64), TABLE64(f, 128), TABLE64(f, 192)
static const uint8_t norm_of[256] = {TABLE256(NORM1)};

/* ---- JSON strings ---------------------------------------------------- */

static int hexval(uint8_t c) {
	if (is_digit(c))
		return c - '0';
	c = lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool hex4(const uint8_t *s, size_t n, uint32_t *out) {
	if (n < 4)
		return false;
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(s[i]);
		if (h < 0)
			return false;
		v = v << 4 | (uint32_t)h;
	}
	*out = v;
	return true;
}

static bool add_utf8(struct buf *b, uint32_t r) {
	uint8_t u[4];
	size_t n;
	if (r < 0x80) {
		u[0] = (uint8_t)r, n = 1;
	} else if (r < 0x800) {
		u[0] = 0xC0 | (uint8_t)(r >> 6), u[1] = 0x80 | (r & 0x3F), n = 2;
	} else if (r < 0x10000) {
		u[0] = 0xE0 | (uint8_t)(r >> 12), u[1] = 0x80 | ((r >> 6) & 0x3F);
		u[2] = 0x80 | (r & 0x3F), n = 3;
	} else {
		u[0] = 0xF0 | (uint8_t)(r >> 18), u[1] = 0x80 | ((r >> 12) & 0x3F);
		u[2] = 0x80 | ((r >> 6) & 0x3F), u[3] = 0x80 | (r & 0x3F), n = 4;
	}
	return buf_add(b, u, n);
}

/*
 * scan_string reads the JSON string starting at s[i] == '"' and returns the
 * index just past its closing quote, or 0 when it is malformed. When out is
 * not NULL the unescaped text is appended to it (lone surrogates become
 * U+FFFD, as encoding/json does).
 */
static size_t scan_string(const uint8_t *s, size_t n, size_t i, struct buf *out) {
	i++; /* opening quote */
	size_t run = i;
	while (i < n) {
		uint8_t c = s[i];
		if (c == '"') {
			if (out && !buf_add(out, s + run, i - run))
				return 0;
			return i + 1;
		}
		if (c < 0x20)
			return 0;
		if (c != '\\') {
			i++;
			continue;
		}
		if (out && !buf_add(out, s + run, i - run))
			return 0;
		if (i + 1 >= n)
			return 0;
		uint8_t e = s[i + 1];
		i += 2;
		uint8_t lit = 0;
		switch (e) {
		case '"': case '\\': case '/': lit = e; break;
		case 'b': lit = '\b'; break;
		case 'f': lit = '\f'; break;
		case 'n': lit = '\n'; break;
		case 'r': lit = '\r'; break;
		case 't': lit = '\t'; break;
		case 'u': {
			uint32_t r;
			if (!hex4(s + i, n - i, &r))
				return 0;
			i += 4;
			if (r >= 0xD800 && r < 0xDC00) {
				uint32_t lo;
				if (i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u' && hex4(s + i + 2, n - i - 2, &lo) &&
				    lo >= 0xDC00 && lo < 0xE000) {
					r = 0x10000 + ((r - 0xD800) << 10) + (lo - 0xDC00);
					i += 6;
				} else {
					r = 0xFFFD;
				}
			} else if (r >= 0xDC00 && r < 0xE000) {
				r = 0xFFFD;
			}
			if (out && !add_utf8(out, r))
				return 0;
			break;
		}
		default:
			return 0;
		}
		if (lit && out && !buf_addc(out, lit))
			return 0;
		run = i;
	}
	return 0;
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/*
 * string_end returns the index just past the closing quote of the JSON
 * string starting at s[i] == '"', or 0 when it is malformed, and tells
 * whether the string holds escapes. It reads eight bytes at a time until a
 * quote, a backslash or a control character; a string with escapes is
 * checked by scan_string.
 */
static size_t string_end(const uint8_t *s, size_t n, size_t i, bool *esc) {
	size_t start = i++;
	*esc = false;
	while (n - i >= 8) {
		uint64_t x;
		memcpy(&x, s + i, 8);
		uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
		/* The high bit of each byte that is '"', '\\' or below 0x20; bytes
		 * above the first such byte may be flagged wrongly, the first
		 * flagged byte is exact. */
		uint64_t hit = (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((x - ONES * 0x20) & ~x)) & HIGHS;
		if (hit) {
			i += (size_t)__builtin_ctzll(hit) >> 3;
			break;
		}
		i += 8;
	}
	while (i < n && s[i] != '"' && s[i] != '\\' && s[i] >= 0x20)
		i++;
	if (i >= n || s[i] < 0x20)
		return 0;
	if (s[i] == '"')
		return i + 1;
	*esc = true;
	return scan_string(s, n, start, NULL);
}

/* add_quoted appends text as a JSON string. */
static bool add_quoted(struct buf *b, const uint8_t *t, size_t n) {
	static const char hex[] = "0123456789abcdef";
	if (!buf_addc(b, '"'))
		return false;
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = t[i];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if (!buf_add(b, t + run, i - run))
			return false;
		char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
		size_t len = 2;
		switch (c) {
		case '"': case '\\': break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			esc[1] = 'u', esc[2] = '0', esc[3] = '0';
			esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
			len = 6;
		}
		if (!buf_add(b, esc, len))
			return false;
		run = i + 1;
	}
	return buf_add(b, t + run, n - run) && buf_addc(b, '"');
}

/* ---- what counts as a secret ----------------------------------------- */

/* A member's value is masked when secret_names is on and its key name,
 * lowercased and without _ - . and spaces, contains one of "password",
 * "passwd", "passphrase", "secret", "token", "apikey", "privatekey",
 * "accesskey", "credential", "authorization", "cookie", "sessionid", or is
 * exactly "pin", "cvv" or "cvc" (secret_name). */

static uint32_t name_hash(const uint8_t *k, size_t n) {
	uint32_t h = 2166136261u; /* FNV-1a over the lowercased name */
	for (size_t i = 0; i < n; i++)
		h = (h ^ lower(k[i])) * 16777619u;
	return h;
}

/* is_field reports whether the name k (not lowercased) is a configured
 * field name. */
static bool is_field(const uint8_t *k, size_t n) {
	if (!(cfg.lens >> (n < 63 ? n : 63) & 1))
		return false;
	for (uint32_t j = name_hash(k, n);; j++) {
		unsigned f = cfg.slots[j & (FIELD_SLOTS - 1)];
		if (f-- == 0)
			return false;
		if (cfg.field_lens[f] != n)
			continue;
		size_t i = 0;
		while (i < n && lower(k[i]) == (uint8_t)cfg.fields[f][i])
			i++;
		if (i == n)
			return true;
	}
}

static void index_fields(void) {
	for (size_t f = 0; f < cfg.nfields; f++) {
		size_t n = cfg.field_lens[f];
		cfg.lens |= 1ull << (n < 63 ? n : 63);
		uint32_t j = name_hash((const uint8_t *)cfg.fields[f], n);
		while (cfg.slots[j & (FIELD_SLOTS - 1)])
			j++;
		cfg.slots[j & (FIELD_SLOTS - 1)] = (uint16_t)(f + 1);
	}
}

/* starts reports whether s[0:n] starts with the word w. */
static bool starts(const uint8_t *s, size_t n, const char *w, size_t wl) {
	if (n < wl)
		return false;
	for (size_t i = 0; i < wl; i++)
		if (s[i] != (uint8_t)w[i])
			return false;
	return true;
}
#define STARTS(s, n, w) starts(s, n, w, sizeof(w) - 1)

static struct buf keybuf, normbuf;

/* secret_name reports whether the name k looks secret. */
static bool secret_name(const uint8_t *k, size_t n) {
	if (!buf_reserve(&normbuf, n))
		return true; /* out of memory: mask rather than leak */
	uint8_t *d = normbuf.p;
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = norm_of[k[i]];
		d[m] = c;
		m += c != 0;
	}
	/* Short words must be the whole name: "pin" but not "shipping". */
	if (m == 3)
		return STARTS(d, m, "pin") || STARTS(d, m, "cvv") || STARTS(d, m, "cvc");
	/* The others anywhere: try the words that start with each byte. */
	for (size_t i = 0; i + 5 <= m; i++) {
		const uint8_t *w = d + i;
		size_t r = m - i;
		switch (w[0]) {
		case 'a':
			if (STARTS(w, r, "apikey") || STARTS(w, r, "accesskey") || STARTS(w, r, "authorization"))
				return true;
			break;
		case 'c':
			if (STARTS(w, r, "credential") || STARTS(w, r, "cookie"))
				return true;
			break;
		case 'p':
			if (STARTS(w, r, "password") || STARTS(w, r, "passwd") || STARTS(w, r, "passphrase") ||
			    STARTS(w, r, "privatekey"))
				return true;
			break;
		case 's':
			if (STARTS(w, r, "secret") || STARTS(w, r, "sessionid"))
				return true;
			break;
		case 't':
			if (STARTS(w, r, "token"))
				return true;
			break;
		}
	}
	return false;
}

/* key_matches reports whether the member named k (unescaped) must be
 * masked. */
static bool key_matches(const uint8_t *k, size_t n) {
	if (cfg.nfields && is_field(k, n))
		return true;
	return cfg.secret_names && secret_name(k, n);
}

/* card_prefix_ok reports whether d (digits only) starts like a card of a
 * major network with a length that network issues. It keeps 13-digit
 * millisecond timestamps and order numbers from being taken for cards. */
static bool card_prefix_ok(const uint8_t *d, size_t n) {
	int p2 = (d[0] - '0') * 10 + (d[1] - '0');
	int p4 = p2 * 100 + (d[2] - '0') * 10 + (d[3] - '0');
	int p3 = p4 / 10;
	if (d[0] == '4')
		return n == 13 || n == 16 || n == 19; /* Visa */
	if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720))
		return n == 16; /* Mastercard */
	if (p2 == 34 || p2 == 37)
		return n == 15; /* American Express */
	if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649) || p2 == 62 || p2 == 35)
		return n >= 16 && n <= 19; /* Discover, UnionPay, JCB */
	if (p2 == 36 || p2 == 38 || p2 == 39 || (p3 >= 300 && p3 <= 305))
		return n >= 14 && n <= 19; /* Diners Club */
	return false;
}

static bool luhn_ok(const uint8_t *d, size_t n) {
	int sum = 0;
	for (size_t i = 0; i < n; i++) {
		int v = d[n - 1 - i] - '0';
		if (i % 2 == 1) {
			v *= 2;
			if (v > 9)
				v -= 9;
		}
		sum += v;
	}
	return sum % 10 == 0;
}

static bool is_card(const uint8_t *digits, size_t n) {
	return n >= 13 && n <= 19 && card_prefix_ok(digits, n) && luhn_ok(digits, n);
}

/* A span of text to mask. */
struct span {
	size_t from, to;
};

#define MAX_SPANS 64

/* card_at: a card number starting at t[i] (a digit after a non-alphanumeric
 * byte), digits optionally grouped by single spaces or dashes. Returns the
 * index past its last digit, or 0. */
static size_t card_at(const uint8_t *t, size_t n, size_t i) {
	uint8_t digits[19];
	size_t nd = 0, end = i;
	while (i < n) {
		if (is_digit(t[i])) {
			if (nd == 19)
				return 0; /* too long for a card */
			digits[nd++] = t[i++];
			end = i;
		} else if ((t[i] == ' ' || t[i] == '-') && i + 1 < n && is_digit(t[i + 1]) && nd > 0) {
			i++;
		} else {
			break;
		}
	}
	if (end < n && is_alnum(t[end]))
		return 0;
	return is_card(digits, nd) ? end : 0;
}

static bool is_token_char(uint8_t c) {
	return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=';
}

static bool is_b64url(uint8_t c) { return is_alnum(c) || c == '-' || c == '_'; }

/* bearer_at: "Bearer <token>" starting at t[i]; returns the span of the
 * token (the word "Bearer" stays). */
static bool bearer_at(const uint8_t *t, size_t n, size_t i, struct span *sp) {
	static const char word[] = "bearer";
	if (n - i < sizeof word)
		return false;
	for (size_t k = 0; k < sizeof word - 1; k++)
		if (lower(t[i + k]) != (uint8_t)word[k])
			return false;
	size_t j = i + sizeof word - 1;
	if (j >= n || (t[j] != ' ' && t[j] != '\t'))
		return false;
	while (j < n && (t[j] == ' ' || t[j] == '\t'))
		j++;
	size_t start = j;
	while (j < n && is_token_char(t[j]))
		j++;
	if (j - start < 8)
		return false;
	sp->from = start, sp->to = j;
	return true;
}

/* jwt_at: a JSON Web Token (three base64url segments, the first starting
 * with "eyJ", the encoding of '{"') at t[i]. Returns the index past it. */
static size_t jwt_at(const uint8_t *t, size_t n, size_t i) {
	if (n - i < 3 || t[i] != 'e' || t[i + 1] != 'y' || t[i + 2] != 'J')
		return 0;
	size_t j = i, dots = 0;
	while (j < n && (is_b64url(t[j]) || (t[j] == '.' && dots < 2))) {
		if (t[j] == '.')
			dots++;
		j++;
	}
	if (dots != 2 || t[j - 1] == '.' || j - i < 16 || (j < n && is_token_char(t[j])))
		return 0;
	return j;
}

/* No card number (13 digits), bearer token ("Bearer " and 8 bytes) or JWT
 * (16 bytes) fits in a shorter text. */
#define MIN_MATCH 13

/* bytes_in: the high bit of each byte of x in [lo, hi] (both below 0x80). */
static uint64_t bytes_in(uint64_t x, uint8_t lo, uint8_t hi) {
	uint64_t x7 = x & ~HIGHS;
	return (x7 + ONES * (uint8_t)(0x80 - lo)) & ~(x7 + ONES * (uint8_t)(0x7F - hi)) & ~x & HIGHS;
}

/* bytes_eq: the high bit of each byte of x equal to c. */
static uint64_t bytes_eq(uint64_t x, uint8_t c) {
	uint64_t y = x ^ (ONES * c);
	return ~(((y & ~HIGHS) + ~HIGHS) | y) & HIGHS;
}

/* may_be_card: whether the 13 bytes at t[i] are digits, spaces and dashes,
 * as the first 13 digits of a card number and what groups them are. */
static bool may_be_card(const uint8_t *t, size_t n, size_t i) {
	if (n - i < MIN_MATCH)
		return false;
	uint64_t a, b;
	memcpy(&a, t + i, 8);
	memcpy(&b, t + i + MIN_MATCH - 8, 8);
	uint64_t ok = (bytes_in(a, '0', '9') | bytes_eq(a, ' ') | bytes_eq(a, '-')) &
	              (bytes_in(b, '0', '9') | bytes_eq(b, ' ') | bytes_eq(b, '-'));
	return ok == HIGHS;
}

/*
 * find_spans lists what to mask in the text t (at most MAX_SPANS). A match
 * starts at a boundary, the text's start or after a byte that is no letter
 * or digit, and with its first byte: a digit (a card number), 'b' or 'B' (a
 * bearer token) or 'e' (a JWT). Eight bytes at a time, it marks where such
 * a start is, then tries the rule of each mark in order.
 */
static size_t find_spans(const uint8_t *t, size_t n, struct span *spans) {
	size_t ns = 0, i = 0;
	uint64_t boundary = 0x80; /* the high bit: t[i - 1] is no letter or digit */
	while (i < n && ns < MAX_SPANS) {
		uint64_t x = 0;
		size_t w = n - i < 8 ? n - i : 8;
		if (w == 8)
			memcpy(&x, t + i, 8);
		else
			for (size_t k = 0; k < w; k++)
				x |= (uint64_t)t[i + k] << (8 * k); /* NUL bytes after the end start nothing */
		uint64_t digit = bytes_in(x, '0', '9');
		uint64_t alnum = digit | bytes_in(x | ONES * 0x20, 'a', 'z');
		uint64_t start = 0;
		if (cfg.card_numbers)
			start |= digit;
		if (cfg.bearer_tokens)
			start |= bytes_eq(x | ONES * 0x20, 'b') | bytes_eq(x, 'e');
		start &= ((~alnum & HIGHS) << 8) | boundary;
		size_t next = i + w;
		for (; start; start &= start - 1) {
			size_t at = i + ((size_t)__builtin_ctzll(start) >> 3);
			struct span sp = {at, 0};
			if (is_digit(t[at]))
				sp.to = may_be_card(t, n, at) ? card_at(t, n, at) : 0;
			else if (t[at] == 'e')
				sp.to = jwt_at(t, n, at);
			else
				bearer_at(t, n, at, &sp);
			if (sp.to) {
				spans[ns++] = sp;
				next = sp.to;
				break;
			}
		}
		if (next == i + w)
			boundary = (~alnum >> 56) & 0x80;
		else
			boundary = is_alnum(t[next - 1]) ? 0 : 0x80;
		i = next;
	}
	return ns;
}

/* ---- the event scan -------------------------------------------------- */

static struct buf out, text, masked;

/* The output is the input with some byte ranges replaced; copied marks how
 * much of the input is already in out. */
static size_t copied;

static bool replace(const uint8_t *ev, size_t from, size_t to, const uint8_t *with, size_t wlen) {
	if (!buf_add(&out, ev + copied, from - copied) || !buf_add(&out, with, wlen))
		return false;
	copied = to;
	return true;
}

/* skip_value returns the index past the JSON value starting at s[i], or 0
 * when it is malformed. Containers are skipped by counting brackets. */
static size_t skip_value(const uint8_t *s, size_t n, size_t i) {
	size_t depth = 0;
	do {
		while (i < n && is_ws(s[i]))
			i++;
		if (i >= n)
			return 0;
		uint8_t c = s[i];
		if (c == '"') {
			bool esc;
			if (!(i = string_end(s, n, i, &esc)))
				return 0;
		} else if (c == '{' || c == '[') {
			depth++, i++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return 0;
			depth--, i++;
		} else if (c == ',' || c == ':') {
			if (depth == 0)
				return 0;
			i++;
		} else {
			size_t st = i;
			while (i < n && !is_ws(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ':')
				i++;
			if (i == st)
				return 0;
		}
	} while (depth > 0);
	return i;
}

/* A number token as JSON writes it: -?int(.frac)?(e[+-]?digits)? */
static size_t scan_number(const uint8_t *s, size_t n, size_t i, bool *plain_digits) {
	size_t st = i;
	if (i < n && s[i] == '-')
		i++;
	size_t ds = i;
	while (i < n && is_digit(s[i]))
		i++;
	if (i == ds)
		return 0;
	*plain_digits = s[st] != '-';
	if (i < n && s[i] == '.') {
		*plain_digits = false;
		size_t fs = ++i;
		while (i < n && is_digit(s[i]))
			i++;
		if (i == fs)
			return 0;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		*plain_digits = false;
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		size_t es = i;
		while (i < n && is_digit(s[i]))
			i++;
		if (i == es)
			return 0;
	}
	return i;
}

/* mask_string inspects the string value s[from:to] (quotes included),
 * which holds escapes when esc. */
static bool mask_string(const uint8_t *s, size_t from, size_t to, bool esc) {
	if (to - from - 2 < MIN_MATCH || !(cfg.card_numbers || cfg.bearer_tokens))
		return true; /* the unescaped text is no longer than this */
	struct span spans[MAX_SPANS];
	if (!esc) {
		/* The text is the bytes between the quotes and re-encodes to
		 * them: copy them around the masks. */
		const uint8_t *t = s + from + 1;
		size_t n = to - from - 2;
		size_t ns = find_spans(t, n, spans);
		if (ns == 0)
			return true;
		if (!buf_add(&out, s + copied, from + 1 - copied))
			return false;
		size_t at = 0;
		for (size_t k = 0; k < ns; k++) {
			if (!buf_add(&out, t + at, spans[k].from - at) ||
			    !buf_add(&out, cfg.mask_json.p + 1, cfg.mask_json.len - 2))
				return false;
			at = spans[k].to;
		}
		if (!buf_add(&out, t + at, n - at) || !buf_addc(&out, '"'))
			return false;
		copied = to;
		return true;
	}
	text.len = 0;
	if (!scan_string(s, to, from, &text))
		return false;
	if (text.len < MIN_MATCH)
		return true;
	size_t ns = find_spans(text.p, text.len, spans);
	if (ns == 0)
		return true;
	masked.len = 0;
	size_t at = 0;
	for (size_t k = 0; k < ns; k++) {
		if (!buf_add(&masked, text.p + at, spans[k].from - at) || !buf_add(&masked, cfg.mask.p, cfg.mask.len))
			return false;
		at = spans[k].to;
	}
	if (!buf_add(&masked, text.p + at, text.len - at))
		return false;
	/* Re-encode into text's buffer, which is free again. */
	text.len = 0;
	if (!add_quoted(&text, masked.p, masked.len))
		return false;
	return replace(s, from, to, text.p, text.len);
}

enum { IN_OBJECT = 1, IN_ARRAY = 2 };

enum result { DONE, MALFORMED, TOO_DEEP, NO_MEMORY };

static enum result redact(const uint8_t *s, size_t n) {
	static uint8_t stack[MAX_DEPTH];
	size_t depth = 0, i = 0;
	bool mask_next = false;
	out.len = 0;
	copied = 0;

	for (;;) {
		/* A value. */
		while (i < n && is_ws(s[i]))
			i++;
		if (i >= n)
			return MALFORMED;
		uint8_t c = s[i];
		if (mask_next) {
			size_t end = skip_value(s, n, i);
			if (!end)
				return MALFORMED;
			if (!replace(s, i, end, cfg.mask_json.p, cfg.mask_json.len))
				return NO_MEMORY;
			i = end;
			mask_next = false;
		} else if (c == '{' || c == '[') {
			if (depth == MAX_DEPTH)
				return TOO_DEEP;
			stack[depth++] = c == '{' ? IN_OBJECT : IN_ARRAY;
			i++;
			while (i < n && is_ws(s[i]))
				i++;
			if (i < n && s[i] == (c == '{' ? '}' : ']')) {
				depth--, i++;
			} else if (c == '{') {
				goto key;
			} else {
				continue;
			}
		} else if (c == '"') {
			bool esc;
			size_t end = string_end(s, n, i, &esc);
			if (!end)
				return MALFORMED;
			if (!mask_string(s, i, end, esc))
				return NO_MEMORY;
			i = end;
		} else if (c == '-' || is_digit(c)) {
			bool plain;
			size_t end = scan_number(s, n, i, &plain);
			if (!end)
				return MALFORMED;
			if (cfg.card_numbers && plain && is_card(s + i, end - i) &&
			    !replace(s, i, end, cfg.mask_json.p, cfg.mask_json.len))
				return NO_MEMORY;
			i = end;
		} else if (n - i >= 4 && (memcmp(s + i, "true", 4) == 0 || memcmp(s + i, "null", 4) == 0)) {
			i += 4;
		} else if (n - i >= 5 && memcmp(s + i, "false", 5) == 0) {
			i += 5;
		} else {
			return MALFORMED;
		}

		/* After a value: close containers, or go on to the next member. */
		for (;;) {
			while (i < n && is_ws(s[i]))
				i++;
			if (depth == 0)
				return i == n ? DONE : MALFORMED;
			if (i >= n)
				return MALFORMED;
			uint8_t close = stack[depth - 1] == IN_OBJECT ? '}' : ']';
			if (s[i] == close) {
				depth--, i++;
				continue;
			}
			if (s[i] != ',')
				return MALFORMED;
			i++;
			if (stack[depth - 1] == IN_ARRAY)
				break;
			goto key;
		}
		continue;

	key:
		/* A member's key, then its colon; the value follows. */
		while (i < n && is_ws(s[i]))
			i++;
		if (i >= n || s[i] != '"')
			return MALFORMED;
		bool esc;
		size_t end = string_end(s, n, i, &esc);
		if (!end)
			return MALFORMED;
		if (esc) {
			keybuf.len = 0;
			if (!scan_string(s, n, i, &keybuf))
				return MALFORMED;
			mask_next = key_matches(keybuf.p, keybuf.len);
		} else {
			mask_next = key_matches(s + i + 1, end - i - 2);
		}
		i = end;
		while (i < n && is_ws(s[i]))
			i++;
		if (i >= n || s[i] != ':')
			return MALFORMED;
		i++;
	}
}

int auditproc_on_event(const struct auditproc_input *in) {
	const uint8_t *s = in->event;
	size_t n = in->event_len;
	size_t st = 0;
	while (st < n && is_ws(s[st]))
		st++;
	if (st == n || s[st] != '{') {
		auditproc_set_message_str("redact: the event is not a JSON object");
		return AUDITPROC_REJECT;
	}
	switch (redact(s, n)) {
	case DONE:
		break;
	case MALFORMED:
		auditproc_set_message_str("redact: the event is not valid JSON, so it cannot be redacted");
		return AUDITPROC_REJECT;
	case TOO_DEEP:
		auditproc_set_message_str("redact: the event nests deeper than 512 levels, so it cannot be redacted");
		return AUDITPROC_REJECT;
	case NO_MEMORY:
		auditproc_set_message_str("redact: out of memory");
		return AUDITPROC_RETRY;
	}
	if (copied == 0)
		return AUDITPROC_OK; /* nothing masked */
	if (!buf_add(&out, s + copied, n - copied)) {
		auditproc_set_message_str("redact: out of memory");
		return AUDITPROC_RETRY;
	}
	int32_t r = auditproc_set_event(out.p, out.len);
	if (r == AUDITPROC_ERR_LIMIT) {
		/* Masks longer than what they hide made the event too large:
		 * passing the original on would leak the secrets. */
		auditproc_set_message_str("redact: the masked event exceeds the event size limit");
		return AUDITPROC_REJECT;
	}
	if (r != AUDITPROC_RESULT_OK) {
		auditproc_set_message_str("redact: the host refused the masked event");
		return AUDITPROC_RETRY;
	}
	return AUDITPROC_OK;
}

/* ---- configuration parsing ------------------------------------------- */

static char errmsg[256];

static int refuse(const char *what, const uint8_t *key, size_t keylen) {
	size_t n = 0;
	const char *prefix = "redact: config: ";
	for (const char *p = prefix; *p && n < sizeof errmsg - 1; p++)
		errmsg[n++] = *p;
	for (size_t k = 0; k < keylen && n < sizeof errmsg - 1; k++)
		errmsg[n++] = (char)key[k];
	if (keylen && n < sizeof errmsg - 2)
		errmsg[n++] = ':', errmsg[n++] = ' ';
	for (const char *p = what; *p && n < sizeof errmsg - 1; p++)
		errmsg[n++] = *p;
	auditproc_set_message(errmsg, n);
	return 1;
}

static size_t ws(const uint8_t *s, size_t n, size_t i) {
	while (i < n && is_ws(s[i]))
		i++;
	return i;
}

static size_t parse_bool(const uint8_t *s, size_t n, size_t i, bool *v) {
	if (n - i >= 4 && memcmp(s + i, "true", 4) == 0)
		return *v = true, i + 4;
	if (n - i >= 5 && memcmp(s + i, "false", 5) == 0)
		return *v = false, i + 5;
	return 0;
}

int auditproc_on_init(const uint8_t *s, size_t n) {
	static struct buf key, val;
	cfg.secret_names = cfg.card_numbers = cfg.bearer_tokens = true;
	cfg.mask.len = 0;
	if (!buf_add(&cfg.mask, "[REDACTED]", 10))
		return refuse("out of memory", NULL, 0);
	size_t i = ws(s, n, 0);
	if (i >= n || s[i] != '{')
		return refuse("the configuration must be a JSON object", NULL, 0);
	i = ws(s, n, i + 1);
	if (i < n && s[i] == '}') {
		i++;
		goto done;
	}
	for (;;) {
		if (i >= n || s[i] != '"')
			return refuse("expected a key", NULL, 0);
		key.len = 0;
		if (!(i = scan_string(s, n, i, &key)))
			return refuse("malformed key", NULL, 0);
		i = ws(s, n, i);
		if (i >= n || s[i] != ':')
			return refuse("expected ':'", key.p, key.len);
		i = ws(s, n, i + 1);
#define KEY(k) (key.len == sizeof(k) - 1 && memcmp(key.p, k, key.len) == 0)
		if (KEY("fields")) {
			if (i >= n || s[i] != '[')
				return refuse("want an array of field names", key.p, key.len);
			i = ws(s, n, i + 1);
			if (i < n && s[i] == ']') {
				i++;
			} else {
				for (;;) {
					if (i >= n || s[i] != '"')
						return refuse("want an array of field names (strings)", key.p, key.len);
					val.len = 0;
					if (!(i = scan_string(s, n, i, &val)))
						return refuse("malformed string", key.p, key.len);
					if (val.len == 0)
						return refuse("a field name is empty", key.p, key.len);
					if (cfg.nfields == MAX_FIELDS)
						return refuse("more than 256 field names", key.p, key.len);
					char *f = malloc(val.len);
					if (f == NULL)
						return refuse("out of memory", NULL, 0);
					for (size_t k = 0; k < val.len; k++)
						f[k] = (char)lower(val.p[k]);
					cfg.fields[cfg.nfields] = f;
					cfg.field_lens[cfg.nfields++] = val.len;
					i = ws(s, n, i);
					if (i < n && s[i] == ',') {
						i = ws(s, n, i + 1);
						continue;
					}
					if (i < n && s[i] == ']') {
						i++;
						break;
					}
					return refuse("expected ',' or ']'", key.p, key.len);
				}
			}
		} else if (KEY("mask")) {
			if (i >= n || s[i] != '"')
				return refuse("want a string", key.p, key.len);
			cfg.mask.len = 0;
			if (!(i = scan_string(s, n, i, &cfg.mask)))
				return refuse("malformed string", key.p, key.len);
		} else if (KEY("secret_names") || KEY("card_numbers") || KEY("bearer_tokens")) {
			bool *v = KEY("secret_names") ? &cfg.secret_names
			        : KEY("card_numbers") ? &cfg.card_numbers
			                              : &cfg.bearer_tokens;
			if (!(i = parse_bool(s, n, i, v)))
				return refuse("want true or false", key.p, key.len);
		} else {
			return refuse("unknown key (known: fields, mask, secret_names, card_numbers, bearer_tokens)",
			              key.p, key.len);
		}
#undef KEY
		i = ws(s, n, i);
		if (i < n && s[i] == ',') {
			i = ws(s, n, i + 1);
			continue;
		}
		if (i < n && s[i] == '}') {
			i++;
			break;
		}
		return refuse("expected ',' or '}'", NULL, 0);
	}
done:
	if (ws(s, n, i) != n)
		return refuse("trailing text after the object", NULL, 0);
	index_fields();
	cfg.mask_json.len = 0;
	if (!add_quoted(&cfg.mask_json, cfg.mask.p, cfg.mask.len))
		return refuse("out of memory", NULL, 0);
	return 0;
}
