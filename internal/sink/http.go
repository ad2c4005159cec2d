package sink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// HTTP presets and body formats.
const (
	PresetSplunkHEC     = "splunk_hec"    // Splunk HTTP Event Collector, /services/collector/event
	PresetElasticsearch = "elasticsearch" // _bulk with create and _id = event id
	PresetOpenSearch    = "opensearch"    // same protocol as elasticsearch
	PresetLoki          = "loki"          // /loki/api/v1/push

	FormatJSON   = "json"   // a JSON array of the events
	FormatNDJSON = "ndjson" // one event per line
)

// Defaults of HTTPConfig.
const (
	DefaultHTTPFormat            = FormatJSON
	DefaultHTTPIdempotencyHeader = "Idempotency-Key"
	DefaultHTTPTimeout           = 10 * time.Second
	DefaultHTTPMaxAttempts       = 4
	DefaultHTTPBackoff           = 200 * time.Millisecond
	DefaultHTTPMaxBackoff        = 5 * time.Second
	// maxKeptBody bounds how much of a refusal's body is kept for the
	// dead letter.
	maxKeptBody = 2048
)

// HTTPConfig configures an HTTP sink.
type HTTPConfig struct {
	// URL receives POST requests.
	URL string
	// Preset is "", splunk_hec, elasticsearch, opensearch or loki; a preset
	// fixes the body and how the answer is read.
	Preset string
	// Format of the body without a preset: json (an array) or ndjson.
	// Default DefaultHTTPFormat.
	Format string
	// HeadersFromEnv maps a header name to the environment variable that
	// holds its value (Authorization: SPLUNK_HEC_AUTH), read at start.
	HeadersFromEnv map[string]string
	// Index is the target index of the elasticsearch/opensearch presets.
	Index string
	// Labels are the stream labels of the loki preset. Default {job: auditproc}.
	Labels map[string]string
	// IdempotencyHeader carries the idempotency key of each request: the
	// event id for one event, a SHA-256 of the event ids for a batch.
	// Default DefaultHTTPIdempotencyHeader.
	IdempotencyHeader string
	// CAFile, CertFile and KeyFile configure TLS for https URLs.
	CAFile, CertFile, KeyFile string
	// Timeout bounds one request. Default DefaultHTTPTimeout.
	Timeout time.Duration
	// MaxAttempts bounds the requests of one Write for retryable answers
	// (429, 5xx, connection errors); then the entries stay pending and are
	// retried with the entry. Default DefaultHTTPMaxAttempts.
	MaxAttempts int
	// Backoff is the first pause between attempts, doubled each time up to
	// DefaultHTTPMaxBackoff; a Retry-After answer is honoured up to that.
	// Default DefaultHTTPBackoff.
	Backoff time.Duration
}

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func (c *HTTPConfig) defaults() {
	if c.Format == "" {
		c.Format = DefaultHTTPFormat
	}
	if c.IdempotencyHeader == "" {
		c.IdempotencyHeader = DefaultHTTPIdempotencyHeader
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultHTTPTimeout
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultHTTPMaxAttempts
	}
	if c.Backoff <= 0 {
		c.Backoff = DefaultHTTPBackoff
	}
	if c.Preset == PresetLoki && len(c.Labels) == 0 {
		c.Labels = map[string]string{"job": "auditproc"}
	}
}

// Validate checks c after defaults (not the environment).
func (c HTTPConfig) Validate() error {
	c.defaults()
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		errs = append(errs, errors.New("url is required"))
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		errs = append(errs, errors.New("url must be an absolute http or https URL"))
	case u.User != nil:
		errs = append(errs, errors.New("url holds credentials: give them by headers_from_env instead"))
	}
	switch c.Preset {
	case "", PresetSplunkHEC, PresetLoki:
	case PresetElasticsearch, PresetOpenSearch:
		if c.Index == "" {
			errs = append(errs, fmt.Errorf("index is required for the %s preset", c.Preset))
		}
	default:
		errs = append(errs, fmt.Errorf("preset %q is not one of splunk_hec, elasticsearch, opensearch, loki", c.Preset))
	}
	if c.Format != FormatJSON && c.Format != FormatNDJSON {
		errs = append(errs, fmt.Errorf("format %q must be json or ndjson", c.Format))
	}
	for h, env := range c.HeadersFromEnv {
		if !headerName.MatchString(h) {
			errs = append(errs, fmt.Errorf("headers_from_env: %q is not a header name", h))
		}
		if env == "" {
			errs = append(errs, fmt.Errorf("headers_from_env.%s: names no environment variable", h))
		}
	}
	if !headerName.MatchString(c.IdempotencyHeader) {
		errs = append(errs, fmt.Errorf("idempotency_header %q is not a header name", c.IdempotencyHeader))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file go together"))
	}
	return errors.Join(errs...)
}

// HTTP posts batches of events. Answers 429 and 5xx, 408 and connection
// errors are retried with backoff; any other 4xx refuses the events for
// good (they are dead-lettered with the answer): a refused batch of several
// events is split, so only the events the endpoint refuses on their own are
// dead-lettered. Bulk APIs that answer per item (the elasticsearch and
// opensearch presets) are read per item, and only the items that failed
// are sent again.
type HTTP struct {
	name    string
	cfg     HTTPConfig
	log     *slog.Logger
	client  *http.Client
	headers http.Header
	labels  []byte // loki stream labels as JSON
}

// NewHTTP validates cfg and reads the headers from the environment.
func NewHTTP(name string, cfg HTTPConfig, logger *slog.Logger) (*HTTP, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sink %q: %w", name, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &HTTP{name: name, cfg: cfg, log: logger, headers: http.Header{}}
	for k, env := range cfg.HeadersFromEnv {
		v, ok := os.LookupEnv(env)
		if !ok {
			return nil, fmt.Errorf("sink %q: headers_from_env.%s: environment variable %s is not set", name, k, env)
		}
		h.headers.Set(k, v)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" || cfg.CertFile != "" {
		u, _ := url.Parse(cfg.URL)
		tc, err := clientTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile, "", u.Host)
		if err != nil {
			return nil, fmt.Errorf("sink %q: %w", name, err)
		}
		tr.TLSClientConfig = tc
	}
	tr.Proxy = nil // the destination is the URL itself
	h.client = &http.Client{Transport: tr, Timeout: cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if cfg.Preset == PresetLoki {
		h.labels, _ = json.Marshal(cfg.Labels)
	}
	return h, nil
}

// retryable is an attempt's outcome worth repeating.
type retryable struct {
	err   error
	after time.Duration // Retry-After, 0 when not given
}

func (r *retryable) Error() string { return r.err.Error() }
func (r *retryable) Unwrap() error { return r.err }

// Write posts items, retrying what may succeed later (see HTTP).
func (h *HTTP) Write(ctx context.Context, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	errs := make([]error, len(items))
	pending := make([]int, len(items))
	for i := range pending {
		pending[i] = i
	}
	pause := h.cfg.Backoff
	for attempt := 1; ; attempt++ {
		sub := make([]Item, len(pending))
		for j, i := range pending {
			sub[j] = items[i]
		}
		res := h.post(ctx, sub)
		var again []int
		var wait time.Duration
		for j, i := range pending {
			errs[i] = res[j]
			var r *retryable
			if errors.As(res[j], &r) {
				again = append(again, i)
				wait = max(wait, r.after)
			}
		}
		pending = again
		if len(pending) == 0 || attempt >= h.cfg.MaxAttempts {
			break
		}
		wait = min(max(wait, pause+rand.N(pause/2+1)), DefaultHTTPMaxBackoff)
		pause = min(2*pause, DefaultHTTPMaxBackoff)
		select {
		case <-ctx.Done():
			return joinItemErrors(errs)
		case <-time.After(wait):
		}
	}
	return joinItemErrors(errs)
}

// joinItemErrors is nil when all are nil, the common error when every item
// failed the same way, a *BatchError otherwise.
func joinItemErrors(errs []error) error {
	var first error
	same := true
	for _, e := range errs {
		if first == nil {
			first = e
		}
		if e != first {
			same = false
		}
	}
	if same {
		return first
	}
	return &BatchError{Errs: errs}
}

// post sends one request for items and returns each item's outcome.
func (h *HTTP) post(ctx context.Context, items []Item) []error {
	out := make([]error, len(items))
	fill := func(err error) []error {
		for i := range out {
			out[i] = err
		}
		return out
	}
	body := h.encode(items)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fill(&PermanentError{Sink: h.name, Reason: err.Error()})
	}
	for k, v := range h.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", h.contentType())
	req.Header.Set(h.cfg.IdempotencyHeader, idempotencyKey(items))
	resp, err := h.client.Do(req)
	if err != nil {
		return fill(&retryable{err: fmt.Errorf("sink %q: %w", h.name, redactURLError(err))})
	}
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	_ = resp.Body.Close()
	status := resp.StatusCode
	switch {
	case status >= 200 && status < 300:
		if h.cfg.Preset == PresetElasticsearch || h.cfg.Preset == PresetOpenSearch {
			return h.bulkItems(items, answer)
		}
		return out
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status == http.StatusTooEarly || status >= 500:
		return fill(&retryable{err: fmt.Errorf("sink %q: HTTP %d: %s", h.name, status, truncate(string(answer), 256)),
			after: retryAfter(resp.Header.Get("Retry-After"))})
	case len(items) > 1:
		// The endpoint refused the batch: find the events it refuses on
		// their own, so that good ones are not dead-lettered with them.
		for i := range items {
			out[i] = h.post(ctx, items[i:i+1])[0]
		}
		return out
	default:
		return fill(&PermanentError{Sink: h.name, Reason: fmt.Sprintf("HTTP %d: %s", status, truncate(string(answer), maxKeptBody))})
	}
}

// bulkItems reads an _bulk answer item by item: 2xx, and 409 (the event
// id is already indexed), are confirmed; 429 and 5xx are retried; the rest
// is refused with the item's error.
func (h *HTTP) bulkItems(items []Item, answer []byte) []error {
	out := make([]error, len(items))
	res := gjson.GetBytes(answer, "items")
	arr := res.Array()
	if len(arr) != len(items) {
		err := &retryable{err: fmt.Errorf("sink %q: bulk answer has %d items for %d events: %s", h.name, len(arr), len(items), truncate(string(answer), 256))}
		for i := range out {
			out[i] = err
		}
		return out
	}
	for i, it := range arr {
		var op gjson.Result
		it.ForEach(func(_, v gjson.Result) bool { op = v; return false })
		status := int(op.Get("status").Int())
		switch {
		case status >= 200 && status < 300, status == http.StatusConflict:
		case status == http.StatusTooManyRequests || status >= 500:
			out[i] = &retryable{err: fmt.Errorf("sink %q: item %s: status %d: %s", h.name, items[i].EventID, status, truncate(op.Get("error").Raw, 256))}
		default:
			out[i] = &PermanentError{Sink: h.name, Reason: fmt.Sprintf("status %d: %s", status, truncate(op.Get("error").Raw, maxKeptBody))}
		}
	}
	return out
}

func (h *HTTP) contentType() string {
	switch {
	case h.cfg.Preset == PresetElasticsearch || h.cfg.Preset == PresetOpenSearch:
		return "application/x-ndjson"
	case h.cfg.Preset == "" && h.cfg.Format == FormatNDJSON:
		return "application/x-ndjson"
	}
	return "application/json"
}

// encode builds the request body for items.
func (h *HTTP) encode(items []Item) []byte {
	var b bytes.Buffer
	switch h.cfg.Preset {
	case PresetElasticsearch, PresetOpenSearch:
		for _, it := range items {
			meta, _ := json.Marshal(map[string]map[string]string{"create": {"_index": h.cfg.Index, "_id": it.EventID}})
			b.Write(meta)
			b.WriteByte('\n')
			b.Write(it.Event)
			b.WriteByte('\n')
		}
	case PresetSplunkHEC:
		for _, it := range items {
			b.WriteString(`{"time":`)
			b.WriteString(strconv.FormatFloat(float64(eventTime(it).UnixMicro())/1e6, 'f', 6, 64))
			b.WriteString(`,"source":"auditproc","sourcetype":"_json","fields":`)
			f, _ := json.Marshal(map[string]string{"event_id": it.EventID, "entry_id": it.EntryID, "key_id": it.KeyID})
			b.Write(f)
			b.WriteString(`,"event":`)
			b.Write(it.Event)
			b.WriteString("}\n")
		}
	case PresetLoki:
		// Loki keeps one of identical entries (same stream, timestamp and
		// line): a retried push leaves one line.
		b.WriteString(`{"streams":[{"stream":`)
		b.Write(h.labels)
		b.WriteString(`,"values":[`)
		for i, it := range items {
			if i > 0 {
				b.WriteByte(',')
			}
			line, _ := json.Marshal(string(it.Event))
			meta, _ := json.Marshal(map[string]string{"event_id": it.EventID, "entry_id": it.EntryID})
			fmt.Fprintf(&b, `["%d",%s,%s]`, eventTime(it).UnixNano(), line, meta)
		}
		b.WriteString(`]}]}`)
	default:
		if h.cfg.Format == FormatNDJSON {
			for _, it := range items {
				b.Write(it.Event)
				b.WriteByte('\n')
			}
			break
		}
		b.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(it.Event)
		}
		b.WriteByte(']')
	}
	return b.Bytes()
}

// eventTime is the event's timestamp member (always present once the event
// was stamped).
func eventTime(it Item) time.Time {
	r := gjson.GetBytes(it.Event, "timestamp")
	if t, err := time.Parse(time.RFC3339Nano, r.Str); err == nil {
		return t
	}
	return time.Unix(0, 0)
}

// idempotencyKey is the event id of a single event, or the SHA-256 of the
// sorted event ids of a batch: the same for every attempt of the same
// events.
func idempotencyKey(items []Item) string {
	if len(items) == 1 {
		return items[0].EventID
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.EventID
	}
	sort.Strings(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	return hex.EncodeToString(sum[:])
}

// retryAfter reads a Retry-After header given in seconds.
func retryAfter(v string) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return min(time.Duration(n)*time.Second, DefaultHTTPMaxBackoff)
	}
	return 0
}

// redactURLError keeps a client error without its URL's query string,
// which may hold a token.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		u, perr := url.Parse(ue.URL)
		if perr == nil {
			u.RawQuery = ""
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return ne
	}
	return err
}

// Close releases idle connections.
func (h *HTTP) Close() error {
	h.client.CloseIdleConnections()
	return nil
}
