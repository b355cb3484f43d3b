package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults applied by New.
const (
	DefaultMaxRequestBytes int64 = 4 << 20
	DefaultTimeout               = 10 * time.Minute
	DefaultMaxOutputTokens int64 = 4096
	DefaultMaxTokensField        = "max_tokens"

	// maxResponseBytes bounds a non-streamed upstream reply.
	maxResponseBytes = 64 << 20
	redacted         = "[REDACTED]"
	userAgent        = "repro-gateway/1"
)

// Endpoint is one configured model endpoint (an OpenAI-compatible server).
type Endpoint struct {
	// Name is how agent runs refer to it ("llm": "name").
	Name string
	// BaseURL is e.g. https://api.openai.com/v1; the gateway appends
	// /chat/completions (and /models).
	BaseURL string
	// APIKey is injected as "Authorization: Bearer <key>"; it is never
	// logged, recorded or returned. Empty: no Authorization header.
	APIKey string
	// Models are the allowed models; empty (or containing ""): any.
	Models []string
	// Prices in USD per million tokens, for cost metering.
	PromptPricePerMTok, CompletionPricePerMTok float64
	// Timeout bounds one whole exchange (including a stream); 0: DefaultTimeout.
	Timeout time.Duration
	// MaxOutputTokens is the largest completion limit the gateway adds to a
	// request that sets none (see the package doc); 0: DefaultMaxOutputTokens.
	MaxOutputTokens int64
	// MaxTokensField is the field the gateway adds in that case:
	// "max_tokens" (default) or "max_completion_tokens" (needed by OpenAI's
	// reasoning models).
	MaxTokensField string
}

// Budget limits of one agent run (0 = unlimited for that dimension).
type Budget struct {
	MaxTokens  int64   `json:"max_tokens,omitempty"`
	MaxCostUSD float64 `json:"max_cost_usd,omitempty"`
}

// Limited reports whether the budget limits anything.
func (b Budget) Limited() bool { return b.MaxTokens > 0 || b.MaxCostUSD > 0 }

// Usage is metered LLM usage (of one exchange, or the total of an agent run).
type Usage struct {
	Requests         int64   `json:"requests"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	TotalTokens      int64   `json:"total_tokens"`
	CostUSD          float64 `json:"cost_usd"`
}

// Plus returns u + v.
func (u Usage) Plus(v Usage) Usage {
	return Usage{
		Requests:         u.Requests + v.Requests,
		PromptTokens:     u.PromptTokens + v.PromptTokens,
		CompletionTokens: u.CompletionTokens + v.CompletionTokens,
		TotalTokens:      u.TotalTokens + v.TotalTokens,
		CostUSD:          u.CostUSD + v.CostUSD,
	}
}

// Session is what a gateway token resolves to.
type Session struct {
	AgentRunID string
	Endpoint   string // the Endpoint.Name this agent run may use
	Budget     Budget
}

// Meter persists usage per agent run (the service implements it over its
// store; MemoryMeter is an in-memory one).
type Meter interface {
	Usage(ctx context.Context, agentRunID string) (Usage, error)
	// Add records usage atomically and returns the new total.
	Add(ctx context.Context, agentRunID string, u Usage) (Usage, error)
}

// Resolver maps a bearer token to its session (error → 401).
type Resolver func(ctx context.Context, token string) (Session, error)

// Trajectory receives every exchange of an agent run.
type Trajectory interface {
	Record(ctx context.Context, agentRunID string, e Exchange) error
}

// Exchange is one call of an agent run as recorded in its trajectory.
type Exchange struct {
	Time       time.Time `json:"time"`
	AgentRunID string    `json:"agent_run_id"`
	Endpoint   string    `json:"endpoint"`
	Model      string    `json:"model,omitempty"`
	Stream     bool      `json:"stream,omitempty"`
	// Request is the body as forwarded (after capping), or as received if
	// it was not forwarded; a JSON string if it was not valid JSON.
	Request json.RawMessage `json:"request,omitempty"`
	// Response is the upstream reply body (a JSON array of the data chunks
	// for a stream; a JSON string if it was not JSON), or the gateway's own
	// error body when nothing came from upstream.
	Response json.RawMessage `json:"response,omitempty"`
	// Status is the HTTP status returned to the agent (499: the agent hung up).
	Status int `json:"status"`
	// UpstreamStatus is the provider's HTTP status, 0 if none.
	UpstreamStatus int `json:"upstream_status,omitempty"`
	// Error is the gateway's error message, if the call failed.
	Error string `json:"error,omitempty"`
	// Refused is the reason a call was refused for budget (not forwarded).
	Refused string `json:"refused,omitempty"`
	// Usage of this exchange, and whether it was estimated (no upstream usage).
	Usage          Usage `json:"usage"`
	UsageEstimated bool  `json:"usage_estimated,omitempty"`
	// RunUsage is the agent run's total after this exchange, when known.
	RunUsage *Usage `json:"run_usage,omitempty"`
	// MaxTokensCap is the completion limit the gateway imposed, 0 if none.
	MaxTokensCap int64 `json:"max_tokens_cap,omitempty"`
	LatencyMS    int64 `json:"latency_ms"`
}

// Config configures a Gateway.
type Config struct {
	Endpoints  []Endpoint
	Resolve    Resolver   // required
	Meter      Meter      // required
	Trajectory Trajectory // nil: exchanges are not recorded
	Log        *slog.Logger
	// MaxRequestBytes bounds a request body; 0: DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// HTTPClient talks to the endpoints; nil: a client over a clone of
	// http.DefaultTransport. Its redirect policy is replaced by "never follow"
	// (a copy is used; the caller's client is not modified).
	HTTPClient *http.Client
}

// Gateway is the LLM gateway; it is an http.Handler.
type Gateway struct {
	endpoints map[string]*Endpoint
	resolve   Resolver
	meter     Meter
	traj      Trajectory
	log       *slog.Logger
	maxBody   int64
	client    *http.Client
	secrets   [][]byte
	locks     runLocks
}

// New validates cfg and returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.Resolve == nil {
		return nil, errors.New("gateway: Config.Resolve is required")
	}
	if cfg.Meter == nil {
		return nil, errors.New("gateway: Config.Meter is required")
	}
	g := &Gateway{
		endpoints: make(map[string]*Endpoint, len(cfg.Endpoints)),
		resolve:   cfg.Resolve,
		meter:     cfg.Meter,
		traj:      cfg.Trajectory,
		log:       cfg.Log,
		maxBody:   cfg.MaxRequestBytes,
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.maxBody <= 0 {
		g.maxBody = DefaultMaxRequestBytes
	}
	for i := range cfg.Endpoints {
		ep := cfg.Endpoints[i] // copy
		if ep.Name == "" {
			return nil, fmt.Errorf("gateway: endpoint %d has no name", i)
		}
		if _, dup := g.endpoints[ep.Name]; dup {
			return nil, fmt.Errorf("gateway: endpoint %q configured twice", ep.Name)
		}
		u, err := url.Parse(ep.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("gateway: endpoint %q: base URL must be an absolute http(s) URL", ep.Name)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("gateway: endpoint %q: base URL must not carry credentials, a query or a fragment", ep.Name)
		}
		ep.BaseURL = strings.TrimRight(ep.BaseURL, "/")
		if ep.PromptPricePerMTok < 0 || ep.CompletionPricePerMTok < 0 {
			return nil, fmt.Errorf("gateway: endpoint %q: negative price", ep.Name)
		}
		if ep.Timeout <= 0 {
			ep.Timeout = DefaultTimeout
		}
		if ep.MaxOutputTokens <= 0 {
			ep.MaxOutputTokens = DefaultMaxOutputTokens
		}
		switch ep.MaxTokensField {
		case "":
			ep.MaxTokensField = DefaultMaxTokensField
		case "max_tokens", "max_completion_tokens":
		default:
			return nil, fmt.Errorf("gateway: endpoint %q: MaxTokensField must be max_tokens or max_completion_tokens", ep.Name)
		}
		ep.Models = slices.Clone(ep.Models)
		if len(ep.APIKey) >= 8 {
			g.secrets = append(g.secrets, []byte(ep.APIKey))
		}
		g.endpoints[ep.Name] = &ep
	}
	var c http.Client
	if cfg.HTTPClient != nil {
		c = *cfg.HTTPClient
	} else {
		c.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	g.client = &c
	return g, nil
}

// ServeHTTP serves POST /v1/chat/completions and GET /v1/models. Mount it
// with http.StripPrefix if it lives under a prefix.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case "/v1/chat/completions":
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "", "use POST for /v1/chat/completions")
			return
		}
		g.chat(w, r)
	case "/v1/models":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "", "use GET for /v1/models")
			return
		}
		g.models(w, r)
	default:
		writeError(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "",
			fmt.Sprintf("unknown path %s %s: this gateway serves POST /v1/chat/completions and GET /v1/models", r.Method, r.URL.Path))
	}
}

// authenticate resolves the bearer token; on failure it answers 401 and
// returns false.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request) (Session, *Endpoint, bool) {
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "",
			"missing gateway token: send Authorization: Bearer <token> (the token given to this agent run)")
		return Session{}, nil, false
	}
	sess, err := g.resolve(r.Context(), token)
	if err != nil {
		g.log.Info("llm gateway: token rejected", "remote", r.RemoteAddr, "err", err)
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "",
			"invalid gateway token: it does not belong to a running agent run")
		return Session{}, nil, false
	}
	ep := g.endpoints[sess.Endpoint]
	if ep == nil {
		g.log.Error("llm gateway: agent run refers to an unconfigured endpoint", "agent_run", sess.AgentRunID, "endpoint", sess.Endpoint)
		writeError(w, http.StatusInternalServerError, "server_error", "endpoint_not_configured", "",
			fmt.Sprintf("model endpoint %q of this agent run is not configured in this gateway", sess.Endpoint))
		return Session{}, nil, false
	}
	return sess, ep, true
}

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// models lists the models the session's endpoint allows; for an endpoint
// that allows any model, it asks the upstream's /models.
func (g *Gateway) models(w http.ResponseWriter, r *http.Request) {
	_, ep, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	if !allowsAny(ep) {
		type model struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			OwnedBy string `json:"owned_by"`
		}
		list := struct {
			Object string  `json:"object"`
			Data   []model `json:"data"`
		}{Object: "list", Data: []model{}}
		for _, m := range ep.Models {
			list.Data = append(list.Data, model{ID: m, Object: "model", OwnedBy: ep.Name})
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), ep.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.BaseURL+"/models", nil)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "internal_error", "", "cannot build the upstream request")
		return
	}
	g.setUpstreamHeaders(req, ep, "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		writeError(w, http.StatusBadGateway, "server_error", "upstream_unavailable", "",
			fmt.Sprintf("model endpoint %q is unreachable: %s", ep.Name, g.redactString(err.Error())))
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil || resp.StatusCode >= 500 || resp.StatusCode < 200 || (resp.StatusCode >= 300 && resp.StatusCode < 400) {
		writeError(w, http.StatusBadGateway, "server_error", "upstream_error", "",
			fmt.Sprintf("model endpoint %q failed to list its models (HTTP %d)", ep.Name, resp.StatusCode))
		return
	}
	w.Header().Set("Content-Type", contentTypeOr(resp.Header.Get("Content-Type"), "application/json"))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(g.redact(body))
}

func allowsAny(ep *Endpoint) bool {
	return len(ep.Models) == 0 || slices.Contains(ep.Models, "")
}

func (g *Gateway) setUpstreamHeaders(req *http.Request, ep *Endpoint, accept string) {
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	req.Header.Set("User-Agent", userAgent)
	if ep.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+ep.APIKey)
	}
}

// redact replaces any provider key in b.
func (g *Gateway) redact(b []byte) []byte {
	for _, s := range g.secrets {
		if bytes.Contains(b, s) {
			b = bytes.ReplaceAll(b, s, []byte(redacted))
		}
	}
	return b
}

func (g *Gateway) redactString(s string) string { return string(g.redact([]byte(s))) }

// apiError is the OpenAI error shape.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

func errorBody(typ, code, param, msg string) []byte {
	e := apiError{Message: msg, Type: typ, Code: code}
	if param != "" {
		e.Param = &param
	}
	b, _ := json.Marshal(struct {
		Error apiError `json:"error"`
	}{e})
	return b
}

func writeError(w http.ResponseWriter, status int, typ, code, param, msg string) {
	writeRaw(w, status, "application/json", errorBody(typ, code, param, msg))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	writeRaw(w, status, "application/json", b)
}

func writeRaw(w http.ResponseWriter, status int, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func contentTypeOr(ct, def string) string {
	if ct == "" {
		return def
	}
	return ct
}

// rawOrString returns b as raw JSON if it is valid JSON, else as a JSON string.
func rawOrString(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return json.RawMessage(bytes.Clone(b))
	}
	s, _ := json.Marshal(string(b))
	return s
}

// runLocks is a set of per-agent-run locks, removed when unused.
type runLocks struct {
	mu sync.Mutex
	m  map[string]*runLock
}

type runLock struct {
	ch   chan struct{}
	refs int
}

// lock takes the lock of agent run id, or gives up when ctx ends.
func (l *runLocks) lock(ctx context.Context, id string) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*runLock)
	}
	rl := l.m[id]
	if rl == nil {
		rl = &runLock{ch: make(chan struct{}, 1)}
		l.m[id] = rl
	}
	rl.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		rl.refs--
		if rl.refs == 0 {
			delete(l.m, id)
		}
		l.mu.Unlock()
	}
	select {
	case rl.ch <- struct{}{}:
		return func() { <-rl.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
