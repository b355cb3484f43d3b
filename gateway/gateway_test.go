package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	providerKey = "sk-provider-SECRET-0123456789abcdef"
	agentToken  = "agent-token-run1"
	secretText  = "the-secret-prompt-content-42"
	standinName = "standin"
	promptToks  = 10 // the stand-in's prompt_tokens
	maxReply    = 20 // the stand-in's completion_tokens when unlimited
)

// standIn is a local OpenAI-compatible model server, the only test double.
type standIn struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	header http.Header
	raw    []byte
	body   map[string]any
}

func (s *standIn) requests() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenRequest(nil), s.seen...)
}

func (s *standIn) last(t *testing.T) seenRequest {
	t.Helper()
	reqs := s.requests()
	if len(reqs) == 0 {
		t.Fatal("the stand-in got no request")
	}
	return reqs[len(reqs)-1]
}

func newStandIn(t *testing.T) *standIn {
	s := &standIn{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+providerKey {
			http.Error(w, `{"error":{"message":"bad key"}}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"upstream-model","object":"model","created":0,"owned_by":"standin"}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		s.mu.Lock()
		s.seen = append(s.seen, seenRequest{header: r.Header.Clone(), raw: raw, body: body})
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if got := r.Header.Get("Authorization"); got != "Bearer "+providerKey {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %q","type":"invalid_request_error","code":"invalid_api_key"}}`, got)
			return
		}
		model, _ := body["model"].(string)
		completion := int64(maxReply)
		for _, f := range []string{"max_tokens", "max_completion_tokens"} {
			if v, ok := body[f].(float64); ok && int64(v) < completion {
				completion = int64(v)
			}
		}
		usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, promptToks, completion, promptToks+completion)
		switch model {
		case "boom":
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"message":"the provider is overloaded"}}`)
			return
		case "reject":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"message":"context too long for key `+providerKey+`","type":"invalid_request_error","code":"context_length_exceeded"}}`)
			return
		case "slow":
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
				return
			}
		case "no-usage":
			usage = ""
		case "slow-stream":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"}}]}\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
			return
		}
		if stream, _ := body["stream"].(bool); stream {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			for _, piece := range []string{"Hel", "lo", "!"} {
				fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}],\"usage\":null}\n\n", model, piece)
				w.(http.Flusher).Flush()
			}
			io.WriteString(w, ": keep-alive comment\n\n")
			so, _ := body["stream_options"].(map[string]any)
			if inc, _ := so["include_usage"].(bool); inc && usage != "" {
				fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[],\"usage\":%s}\n\n", model, usage)
			}
			io.WriteString(w, "data: [DONE]\n\n")
			return
		}
		reply := fmt.Sprintf(`{"id":"c1","object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]`, model)
		if usage != "" {
			reply += `,"usage":` + usage
		}
		io.WriteString(w, reply+"}")
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

type env struct {
	t     *testing.T
	up    *standIn
	gw    *httptest.Server
	g     *Gateway
	meter *MemoryMeter
	root  string
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newEnv starts a stand-in and a gateway whose token agentToken resolves to
// agent run "run1" with budget b. mod may adjust the config.
func newEnv(t *testing.T, b Budget, mod func(*Config)) *env {
	t.Helper()
	e := &env{t: t, up: newStandIn(t), meter: &MemoryMeter{}, root: t.TempDir(), logs: &syncBuffer{}}
	cfg := Config{
		Endpoints: []Endpoint{{
			Name:                   standinName,
			BaseURL:                e.up.srv.URL + "/v1/",
			APIKey:                 providerKey,
			Models:                 []string{"small", "boom", "reject", "slow", "no-usage", "slow-stream"},
			PromptPricePerMTok:     1,
			CompletionPricePerMTok: 2,
			Timeout:                3 * time.Second,
		}},
		Resolve: func(_ context.Context, token string) (Session, error) {
			if token == agentToken {
				return Session{AgentRunID: "run1", Endpoint: standinName, Budget: b}, nil
			}
			return Session{}, errors.New("unknown token")
		},
		Meter:      e.meter,
		Trajectory: &FileTrajectory{Dir: func(id string) string { return filepath.Join(e.root, id) }},
		Log:        slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.g = g
	e.gw = httptest.NewServer(g)
	t.Cleanup(e.gw.Close)
	return e
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) apiError(t *testing.T) apiError {
	t.Helper()
	var e struct {
		Error apiError `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("not an OpenAI-style error (%v): %s", err, r.body)
	}
	return e.Error
}

func (e *env) do(method, path, token string, body []byte, header map[string]string) result {
	e.t.Helper()
	req, err := http.NewRequest(method, e.gw.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) chat(body string) result {
	e.t.Helper()
	return e.do(http.MethodPost, "/v1/chat/completions", agentToken, []byte(body), nil)
}

func chatBody(model string, extra string) string {
	s := `{"model":"` + model + `","messages":[{"role":"user","content":"` + secretText + `"}]`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

func (e *env) usage() Usage {
	u, _ := e.meter.Usage(context.Background(), "run1")
	return u
}

func (e *env) seed(u Usage) {
	if _, err := e.meter.Add(context.Background(), "run1", u); err != nil {
		e.t.Fatal(err)
	}
}

// trajectory reads run1's trajectory and checks it holds no provider key.
func (e *env) trajectory() []Exchange {
	e.t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.root, "run1", TrajectoryFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(providerKey)) {
		e.t.Fatalf("trajectory contains the provider key:\n%s", raw)
	}
	var out []Exchange
	for _, line := range bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n")) {
		var x Exchange
		if err := json.Unmarshal(line, &x); err != nil {
			e.t.Fatalf("trajectory line is not JSON (%v): %s", err, line)
		}
		out = append(out, x)
	}
	return out
}

// checkLogs asserts the logs hold neither the key nor message bodies.
func (e *env) checkLogs() {
	e.t.Helper()
	logs := e.logs.String()
	for _, s := range []string{providerKey, secretText, agentToken} {
		if strings.Contains(logs, s) {
			e.t.Fatalf("logs contain %q:\n%s", s, logs)
		}
	}
}

func approx(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func TestForwardInjectsKeyAndMeters(t *testing.T) {
	e := newEnv(t, Budget{}, nil)
	body := chatBody("small", `"temperature":0.5`)
	r := e.do(http.MethodPost, "/v1/chat/completions", agentToken, []byte(body), map[string]string{
		"Cookie":              "session=agent-cookie",
		"X-Forwarded-For":     "10.0.0.1",
		"X-Custom":            "agent-header",
		"Accept":              "application/json",
		"Connection":          "keep-alive",
		"Proxy-Authorization": "Basic " + agentToken,
	})
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if !bytes.Contains(r.body, []byte(`"content":"hello"`)) {
		t.Fatalf("reply not passed through: %s", r.body)
	}
	seen := e.up.last(t)
	if got := seen.header.Get("Authorization"); got != "Bearer "+providerKey {
		t.Fatalf("upstream Authorization = %q, want the provider key", got)
	}
	for name, vals := range seen.header {
		if strings.Contains(strings.Join(vals, ","), agentToken) {
			t.Fatalf("agent token forwarded in %s", name)
		}
		switch name {
		case "Authorization", "Content-Type", "Accept", "User-Agent", "Content-Length", "Accept-Encoding":
		default:
			t.Errorf("header %s forwarded: %q", name, vals)
		}
	}
	if got := seen.header.Get("Accept"); got != "application/json" {
		t.Errorf("Accept = %q", got)
	}
	if string(seen.raw) != body {
		t.Errorf("an unmodified body must be forwarded byte for byte:\n got %s\nwant %s", seen.raw, body)
	}
	if bytes.Contains(r.body, []byte(providerKey)) {
		t.Fatal("reply contains the provider key")
	}

	want := Usage{Requests: 1, PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30, CostUSD: 10*1e-6 + 20*2e-6}
	if got := e.usage(); got.Requests != want.Requests || got.TotalTokens != want.TotalTokens ||
		got.PromptTokens != want.PromptTokens || got.CompletionTokens != want.CompletionTokens || !approx(got.CostUSD, want.CostUSD) {
		t.Fatalf("metered %+v, want %+v", got, want)
	}
	// A second call adds up.
	if r := e.chat(chatBody("small", "")); r.status != http.StatusOK {
		t.Fatalf("status %d", r.status)
	}
	if got := e.usage(); got.TotalTokens != 60 || got.Requests != 2 || !approx(got.CostUSD, 2*want.CostUSD) {
		t.Fatalf("metered %+v after two calls", got)
	}

	tr := e.trajectory()
	if len(tr) != 2 {
		t.Fatalf("trajectory has %d lines, want 2", len(tr))
	}
	x := tr[0]
	if x.Status != 200 || x.UpstreamStatus != 200 || x.Model != "small" || x.AgentRunID != "run1" || x.Endpoint != standinName ||
		x.Usage.TotalTokens != 30 || x.UsageEstimated || x.RunUsage == nil || x.RunUsage.TotalTokens != 30 || x.Time.IsZero() {
		t.Fatalf("trajectory line: %+v", x)
	}
	if !bytes.Contains(x.Request, []byte(secretText)) || !bytes.Contains(x.Response, []byte(`"hello"`)) {
		t.Fatalf("trajectory lacks request or response: %s / %s", x.Request, x.Response)
	}
	if tr[1].RunUsage == nil || tr[1].RunUsage.TotalTokens != 60 {
		t.Fatalf("second line's run usage: %+v", tr[1].RunUsage)
	}
	e.checkLogs()
}

func TestBudgetRefusal(t *testing.T) {
	tests := []struct {
		name    string
		budget  Budget
		seed    Usage
		wantMsg string
	}{
		{"token budget", Budget{MaxTokens: 10000}, Usage{TotalTokens: 10234},
			"token budget of this agent run exhausted: 10234 of 10000 tokens used"},
		{"token budget exactly reached", Budget{MaxTokens: 100, MaxCostUSD: 10}, Usage{TotalTokens: 100, CostUSD: 1},
			"token budget of this agent run exhausted: 100 of 100 tokens used"},
		{"cost budget", Budget{MaxCostUSD: 0.5}, Usage{TotalTokens: 5, CostUSD: 0.75},
			"cost budget of this agent run exhausted: $0.750000 of $0.500000 used"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.budget, nil)
			e.seed(tc.seed)
			r := e.chat(chatBody("small", ""))
			if r.status != http.StatusTooManyRequests {
				t.Fatalf("status %d, want 429: %s", r.status, r.body)
			}
			ae := r.apiError(t)
			if ae.Code != "budget_exceeded" || ae.Message != tc.wantMsg {
				t.Fatalf("error %+v, want code budget_exceeded and %q", ae, tc.wantMsg)
			}
			if r.header.Get("X-Should-Retry") != "false" {
				t.Errorf("X-Should-Retry = %q", r.header.Get("X-Should-Retry"))
			}
			if n := len(e.up.requests()); n != 0 {
				t.Fatalf("a refused call reached the provider (%d requests)", n)
			}
			if got := e.usage(); got != tc.seed {
				t.Fatalf("usage changed by a refusal: %+v", got)
			}
			tr := e.trajectory()
			if len(tr) != 1 || tr[0].Status != 429 || tr[0].Refused != tc.wantMsg || tr[0].RunUsage == nil || *tr[0].RunUsage != tc.seed ||
				!bytes.Contains(tr[0].Request, []byte(secretText)) {
				t.Fatalf("trajectory: %+v", tr)
			}
			e.checkLogs()
		})
	}
}

// Successive calls run into the token budget: capped, then refused.
func TestBudgetExhaustedBySuccessiveCalls(t *testing.T) {
	e := newEnv(t, Budget{MaxTokens: 50}, nil)
	// 1: max_tokens 100 is capped to 50; the stand-in answers 20 → 30 used.
	if r := e.chat(chatBody("small", `"max_tokens":100`)); r.status != 200 {
		t.Fatalf("call 1: %d %s", r.status, r.body)
	}
	if got := e.up.last(t).body["max_tokens"]; got != float64(50) {
		t.Fatalf("call 1 max_tokens = %v, want 50", got)
	}
	// 2: 20 left → capped to 20 → 10+20 → 60 used (overshoot = the prompt).
	if r := e.chat(chatBody("small", `"max_tokens":100`)); r.status != 200 {
		t.Fatalf("call 2: %d %s", r.status, r.body)
	}
	if got := e.up.last(t).body["max_tokens"]; got != float64(20) {
		t.Fatalf("call 2 max_tokens = %v, want 20", got)
	}
	// 3: refused.
	r := e.chat(chatBody("small", `"max_tokens":100`))
	if r.status != 429 || r.apiError(t).Message != "token budget of this agent run exhausted: 60 of 50 tokens used" {
		t.Fatalf("call 3: %d %s", r.status, r.body)
	}
	if n := len(e.up.requests()); n != 2 {
		t.Fatalf("provider got %d requests, want 2", n)
	}
	tr := e.trajectory()
	if len(tr) != 3 || tr[0].MaxTokensCap != 50 || tr[1].MaxTokensCap != 20 || tr[2].Refused == "" {
		t.Fatalf("trajectory: %+v", tr)
	}
}

func TestMaxTokensCapped(t *testing.T) {
	tests := []struct {
		name     string
		budget   Budget
		seed     Usage
		extra    string
		want     map[string]any // fields the provider must see (nil value: absent)
		wantCap  int64
		verbatim bool // the body must be forwarded unchanged
	}{
		{"max_tokens above remaining", Budget{MaxTokens: 1000}, Usage{TotalTokens: 995}, `"max_tokens":100`,
			map[string]any{"max_tokens": float64(5), "max_completion_tokens": nil}, 5, false},
		{"max_completion_tokens above remaining", Budget{MaxTokens: 1000}, Usage{TotalTokens: 995}, `"max_completion_tokens":100`,
			map[string]any{"max_completion_tokens": float64(5), "max_tokens": nil}, 5, false},
		{"both sent", Budget{MaxTokens: 1000}, Usage{TotalTokens: 995}, `"max_completion_tokens":100,"max_tokens":3`,
			map[string]any{"max_completion_tokens": float64(5), "max_tokens": float64(3)}, 5, false},
		{"below remaining untouched", Budget{MaxTokens: 1000}, Usage{TotalTokens: 995}, `"max_tokens":3`,
			map[string]any{"max_tokens": float64(3)}, 0, true},
		{"none sent, small remainder", Budget{MaxTokens: 1000}, Usage{TotalTokens: 995}, ``,
			map[string]any{"max_tokens": float64(5)}, 5, false},
		{"null sent, small remainder", Budget{MaxTokens: 1000}, Usage{TotalTokens: 995}, `"max_tokens":null`,
			map[string]any{"max_tokens": float64(5)}, 5, false},
		{"none sent, remainder above MaxOutputTokens", Budget{MaxTokens: 1_000_000}, Usage{}, ``,
			map[string]any{"max_tokens": nil, "max_completion_tokens": nil}, 0, true},
		{"n divides the cap", Budget{MaxTokens: 1000}, Usage{TotalTokens: 990}, `"max_tokens":100,"n":2`,
			map[string]any{"max_tokens": float64(5)}, 5, false},
		{"cost budget caps completion", Budget{MaxCostUSD: 0.001}, Usage{CostUSD: 0.001 - 12e-6}, `"max_tokens":100`,
			map[string]any{"max_tokens": float64(6)}, 6, false}, // $12e-6 at $2/MTok = 6 tokens
		{"no budget: untouched", Budget{}, Usage{TotalTokens: 1 << 40}, `"max_tokens":100`,
			map[string]any{"max_tokens": float64(100)}, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.budget, nil)
			e.seed(tc.seed)
			body := chatBody("small", tc.extra)
			if r := e.chat(body); r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			seen := e.up.last(t)
			for k, v := range tc.want {
				got, ok := seen.body[k]
				if v == nil && ok {
					t.Errorf("%s = %v, want absent", k, got)
				}
				if v != nil && got != v {
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
			if tc.verbatim != (string(seen.raw) == body) {
				t.Errorf("forwarded verbatim = %v, want %v (%s)", string(seen.raw) == body, tc.verbatim, seen.raw)
			}
			tr := e.trajectory()
			if len(tr) != 1 || tr[0].MaxTokensCap != tc.wantCap {
				t.Fatalf("trajectory cap: %+v, want %d", tr, tc.wantCap)
			}
			if !bytes.Equal(bytes.TrimSpace(tr[0].Request), bytes.TrimSpace(seen.raw)) {
				t.Errorf("trajectory request %s is not what was forwarded %s", tr[0].Request, seen.raw)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name, body, param, code string
	}{
		{"bad JSON", `{"model":`, "", "invalid_json"},
		{"not an object", `[1,2]`, "", "invalid_json"},
		{"null body", `null`, "", "invalid_json"},
		{"empty body", ``, "", "invalid_json"},
		{"missing model", `{"messages":[{"role":"user","content":"x"}]}`, "model", "invalid_request"},
		{"model not a string", `{"model":7,"messages":[{"role":"user","content":"x"}]}`, "model", "invalid_request"},
		{"model not allowed", chatBody("gpt-expensive", ""), "model", "model_not_allowed"},
		{"missing messages", `{"model":"small"}`, "messages", "invalid_request"},
		{"empty messages", `{"model":"small","messages":[]}`, "messages", "invalid_request"},
		{"messages not an array", `{"model":"small","messages":"hi"}`, "messages", "invalid_request"},
		{"stream not a bool", chatBody("small", `"stream":"yes"`), "stream", "invalid_request"},
		{"negative max_tokens", chatBody("small", `"max_tokens":-1`), "max_tokens", "invalid_request"},
		{"fractional max_completion_tokens", chatBody("small", `"max_completion_tokens":1.5`), "max_completion_tokens", "invalid_request"},
		{"n zero", chatBody("small", `"n":0`), "n", "invalid_request"},
		{"stream_options not an object", chatBody("small", `"stream":true,"stream_options":true`), "stream_options", "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Budget{MaxTokens: 1000}, nil)
			r := e.chat(tc.body)
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", r.status, r.body)
			}
			ae := r.apiError(t)
			gotParam := ""
			if ae.Param != nil {
				gotParam = *ae.Param
			}
			if ae.Type != "invalid_request_error" || ae.Code != tc.code || gotParam != tc.param {
				t.Fatalf("error %+v (param %q), want code %q param %q", ae, gotParam, tc.code, tc.param)
			}
			if tc.param != "" && !strings.Contains(ae.Message, tc.param) {
				t.Errorf("message %q does not name the field %q", ae.Message, tc.param)
			}
			if n := len(e.up.requests()); n != 0 {
				t.Fatalf("an invalid request reached the provider")
			}
			if u := e.usage(); u != (Usage{}) {
				t.Fatalf("an invalid request was metered: %+v", u)
			}
			if tr := e.trajectory(); len(tr) != 1 || tr[0].Status != 400 || tr[0].Error != ae.Message {
				t.Fatalf("trajectory: %+v", tr)
			}
		})
	}

	t.Run("body too large", func(t *testing.T) {
		e := newEnv(t, Budget{}, func(c *Config) { c.MaxRequestBytes = 256 })
		r := e.chat(chatBody("small", `"padding":"`+strings.Repeat("x", 300)+`"`))
		if r.status != http.StatusRequestEntityTooLarge || r.apiError(t).Code != "request_too_large" {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if len(e.up.requests()) != 0 {
			t.Fatal("reached the provider")
		}
		if tr := e.trajectory(); len(tr) != 1 || tr[0].Status != 413 {
			t.Fatalf("trajectory: %+v", tr)
		}
	})
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name   string
		header string
	}{
		{"no header", ""},
		{"unknown token", "Bearer not-a-token"},
		{"provider key as token", "Bearer " + providerKey},
		{"wrong scheme", "Basic " + agentToken},
		{"empty bearer", "Bearer "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Budget{}, nil)
			for _, path := range []struct{ method, path string }{
				{http.MethodPost, "/v1/chat/completions"}, {http.MethodGet, "/v1/models"},
			} {
				r := e.do(path.method, path.path, "", []byte(chatBody("small", "")), map[string]string{"Authorization": tc.header})
				if r.status != http.StatusUnauthorized {
					t.Fatalf("%s: status %d, want 401", path.path, r.status)
				}
				if ae := r.apiError(t); ae.Code != "invalid_api_key" || ae.Type != "invalid_request_error" {
					t.Fatalf("%s: error %+v", path.path, ae)
				}
			}
			if len(e.up.requests()) != 0 {
				t.Fatal("an unauthenticated call reached the provider")
			}
			if entries, _ := os.ReadDir(e.root); len(entries) != 0 {
				t.Fatal("an unauthenticated call was recorded")
			}
			e.checkLogs()
		})
	}

	t.Run("endpoint not configured", func(t *testing.T) {
		e := newEnv(t, Budget{}, func(c *Config) {
			c.Resolve = func(context.Context, string) (Session, error) {
				return Session{AgentRunID: "run1", Endpoint: "elsewhere"}, nil
			}
		})
		r := e.chat(chatBody("small", ""))
		if r.status != http.StatusInternalServerError || r.apiError(t).Code != "endpoint_not_configured" {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	})
}

func TestRoutes(t *testing.T) {
	e := newEnv(t, Budget{}, nil)
	if r := e.do(http.MethodGet, "/v1/chat/completions", agentToken, nil, nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET chat: %d", r.status)
	}
	if r := e.do(http.MethodPost, "/v1/embeddings", agentToken, []byte(`{}`), nil); r.status != http.StatusNotFound || r.apiError(t).Code != "unknown_url" {
		t.Errorf("embeddings: %d %s", r.status, r.body)
	}
}

func TestUpstreamErrors(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + "/v1"
	dead.Close()

	tests := []struct {
		name       string
		model      string
		mod        func(*Config)
		wantStatus int
		wantCode   string // gateway error code; "" if the provider's body is passed through
		wantInTraj string
	}{
		{"provider 5xx", "boom", nil, http.StatusBadGateway, "upstream_error", "the provider is overloaded"},
		{"provider 4xx passed through", "reject", nil, http.StatusBadRequest, "", "context_length_exceeded"},
		{"provider down", "small", func(c *Config) { c.Endpoints[0].BaseURL = deadURL }, http.StatusBadGateway, "upstream_unavailable", ""},
		{"provider timeout", "slow", func(c *Config) { c.Endpoints[0].Timeout = 200 * time.Millisecond }, http.StatusBadGateway, "upstream_timeout", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Budget{MaxTokens: 1000}, tc.mod)
			r := e.chat(chatBody(tc.model, ""))
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.status, tc.wantStatus, r.body)
			}
			ae := r.apiError(t)
			if tc.wantCode != "" && ae.Code != tc.wantCode {
				t.Fatalf("code %q, want %q (%s)", ae.Code, tc.wantCode, ae.Message)
			}
			if tc.wantCode == "" && ae.Code != tc.wantInTraj {
				t.Fatalf("provider body not passed through: %s", r.body)
			}
			if bytes.Contains(r.body, []byte(providerKey)) {
				t.Fatalf("reply contains the provider key: %s", r.body)
			}
			if tc.wantCode == "" && !bytes.Contains(r.body, []byte(redacted)) {
				t.Fatalf("echoed key not redacted: %s", r.body)
			}
			tr := e.trajectory()
			if len(tr) != 1 || tr[0].Status != tc.wantStatus || tr[0].Error == "" || !bytes.Contains(tr[0].Response, []byte(tc.wantInTraj)) {
				t.Fatalf("trajectory: %+v", tr)
			}
			if u := e.usage(); u.Requests != 1 || u.TotalTokens != 0 {
				t.Fatalf("usage after a failed call: %+v", u)
			}
			e.checkLogs()
		})
	}

	t.Run("no usage in reply is estimated", func(t *testing.T) {
		e := newEnv(t, Budget{}, nil)
		body := chatBody("no-usage", "")
		if r := e.chat(body); r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		tr := e.trajectory()
		if len(tr) != 1 || !tr[0].UsageEstimated {
			t.Fatalf("trajectory: %+v", tr)
		}
		var req struct{ Messages json.RawMessage }
		var reply struct{ Choices json.RawMessage }
		_ = json.Unmarshal([]byte(body), &req)
		_ = json.Unmarshal(tr[0].Response, &reply)
		wantP, wantC := estimate(len(req.Messages)), estimate(len(reply.Choices))
		if u := e.usage(); u.PromptTokens != wantP || u.CompletionTokens != wantC || u.TotalTokens != wantP+wantC || u.CostUSD <= 0 {
			t.Fatalf("estimated usage %+v, want prompt %d completion %d", u, wantP, wantC)
		}
	})
}

// sse reads an event stream into its data payloads.
func sse(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, p)
		}
	}
	return out
}

func TestStreaming(t *testing.T) {
	tests := []struct {
		name          string
		model         string
		extra         string
		wantUsageSeen bool // the agent sees the usage chunk
		estimated     bool
	}{
		{"usage forced and hidden", "small", `"stream":true`, false, false},
		{"usage asked by the agent", "small", `"stream":true,"stream_options":{"include_usage":true}`, true, false},
		{"other stream_options kept", "small", `"stream":true,"stream_options":{"include_usage":false,"x":1}`, false, false},
		{"no usage from provider", "no-usage", `"stream":true`, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Budget{MaxTokens: 1000}, nil)
			r := e.chat(chatBody(tc.model, tc.extra+`,"max_tokens":3`))
			if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d %s: %s", r.status, r.header.Get("Content-Type"), r.body)
			}
			data := sse(t, r.body)
			if len(data) == 0 || data[len(data)-1] != "[DONE]" {
				t.Fatalf("stream does not end with [DONE]: %q", data)
			}
			var text strings.Builder
			sawUsage := false
			for _, d := range data[:len(data)-1] {
				var ch struct {
					Choices []struct {
						Delta struct{ Content string }
					}
					Usage *wireUsage
				}
				if err := json.Unmarshal([]byte(d), &ch); err != nil {
					t.Fatalf("bad chunk %q: %v", d, err)
				}
				for _, c := range ch.Choices {
					text.WriteString(c.Delta.Content)
				}
				sawUsage = sawUsage || ch.Usage != nil
			}
			if text.String() != "Hello!" || sawUsage != tc.wantUsageSeen {
				t.Fatalf("agent saw %q, usage chunk %v (want %v)", text.String(), sawUsage, tc.wantUsageSeen)
			}
			if !bytes.Contains(r.body, []byte(": keep-alive comment")) {
				t.Errorf("comment lines not passed through")
			}
			seen := e.up.last(t)
			so, _ := seen.body["stream_options"].(map[string]any)
			if so["include_usage"] != true {
				t.Fatalf("include_usage not forced: %s", seen.raw)
			}
			if strings.Contains(tc.extra, `"x":1`) && so["x"] != float64(1) {
				t.Fatalf("other stream_options lost: %s", seen.raw)
			}
			u := e.usage()
			tr := e.trajectory()
			if len(tr) != 1 || !tr[0].Stream || tr[0].Error != "" || tr[0].UsageEstimated != tc.estimated {
				t.Fatalf("trajectory: %+v", tr)
			}
			var chunks []json.RawMessage
			if err := json.Unmarshal(tr[0].Response, &chunks); err != nil || len(chunks) < 3 {
				t.Fatalf("trajectory response is not the chunk list: %s", tr[0].Response)
			}
			if tc.estimated {
				if u.TotalTokens <= 0 || u.Requests != 1 {
					t.Fatalf("estimated usage %+v", u)
				}
				return
			}
			if want := (Usage{Requests: 1, PromptTokens: 10, CompletionTokens: 3, TotalTokens: 13}); u.TotalTokens != want.TotalTokens ||
				u.PromptTokens != want.PromptTokens || u.CompletionTokens != want.CompletionTokens || !approx(u.CostUSD, 10e-6+6e-6) {
				t.Fatalf("metered %+v, want %+v", u, want)
			}
		})
	}
}

// Concurrent calls of one agent run are serialized around check → forward →
// meter, so the budget is overshot only by the last call's prompt tokens.
func TestConcurrentBudget(t *testing.T) {
	const budget, calls = 100, 20
	e := newEnv(t, Budget{MaxTokens: budget}, nil)
	var wg sync.WaitGroup
	statuses := make([]int, calls)
	for i := range calls {
		wg.Go(func() {
			statuses[i] = e.chat(chatBody("small", "")).status
		})
	}
	wg.Wait()
	ok, refused := 0, 0
	for _, s := range statuses {
		switch s {
		case 200:
			ok++
		case 429:
			refused++
		default:
			t.Fatalf("unexpected status %d", s)
		}
	}
	// 30, 60, 90, then 10 left → max_tokens 10 → 110; the rest refused.
	u := e.usage()
	if ok != 4 || refused != calls-4 || u.TotalTokens != 110 || u.Requests != 4 {
		t.Fatalf("ok %d refused %d usage %+v; want 4 served and 110 tokens", ok, refused, u)
	}
	if u.TotalTokens > budget+promptToks {
		t.Fatalf("budget overshot by more than one prompt: %d", u.TotalTokens)
	}
	if tr := e.trajectory(); len(tr) != calls {
		t.Fatalf("trajectory has %d lines, want %d", len(tr), calls)
	}
	e.g.locks.mu.Lock()
	left := len(e.g.locks.m)
	e.g.locks.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d per-run locks left behind", left)
	}
}

func TestModels(t *testing.T) {
	e := newEnv(t, Budget{}, nil)
	r := e.do(http.MethodGet, "/v1/models", agentToken, nil, nil)
	var list struct {
		Object string
		Data   []struct{ ID, Object string }
	}
	if err := json.Unmarshal(r.body, &list); err != nil || r.status != 200 || list.Object != "list" || len(list.Data) != 6 || list.Data[0].ID != "small" {
		t.Fatalf("models: %d %s", r.status, r.body)
	}
	if len(e.up.requests()) != 0 {
		t.Fatal("an allow-list must be answered locally")
	}

	// An endpoint that allows any model asks the provider.
	e = newEnv(t, Budget{}, func(c *Config) { c.Endpoints[0].Models = nil })
	r = e.do(http.MethodGet, "/v1/models", agentToken, nil, nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte("upstream-model")) {
		t.Fatalf("models via provider: %d %s", r.status, r.body)
	}
	if r := e.chat(chatBody("anything-goes", "")); r.status != 200 {
		t.Fatalf("any model: %d %s", r.status, r.body)
	}
}

func TestFileTrajectoryConcurrent(t *testing.T) {
	root := t.TempDir()
	ft := &FileTrajectory{Dir: func(id string) string { return filepath.Join(root, "runs", id) }}
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := []string{"a", "b"}[i%2]
			x := Exchange{AgentRunID: id, Model: "m", Status: 200, Request: json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("y", 10000)))}
			if err := ft.Record(context.Background(), id, x); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, id := range []string{"a", "b"} {
		raw, err := os.ReadFile(filepath.Join(root, "runs", id, TrajectoryFile))
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n"))
		if len(lines) != n/2 {
			t.Fatalf("%s: %d lines, want %d", id, len(lines), n/2)
		}
		for _, l := range lines {
			var x Exchange
			if err := json.Unmarshal(l, &x); err != nil || x.AgentRunID != id {
				t.Fatalf("bad line: %v %.80s", err, l)
			}
		}
	}
	if err := (&FileTrajectory{}).Record(context.Background(), "x", Exchange{}); err == nil {
		t.Fatal("a FileTrajectory without Dir must fail")
	}
}

func TestNew(t *testing.T) {
	resolve := func(context.Context, string) (Session, error) { return Session{}, nil }
	meter := &MemoryMeter{}
	ok := Endpoint{Name: "a", BaseURL: "https://api.example.com/v1"}
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"valid", Config{Endpoints: []Endpoint{ok}, Resolve: resolve, Meter: meter}, true},
		{"no resolver", Config{Endpoints: []Endpoint{ok}, Meter: meter}, false},
		{"no meter", Config{Endpoints: []Endpoint{ok}, Resolve: resolve}, false},
		{"duplicate", Config{Endpoints: []Endpoint{ok, ok}, Resolve: resolve, Meter: meter}, false},
		{"no name", Config{Endpoints: []Endpoint{{BaseURL: ok.BaseURL}}, Resolve: resolve, Meter: meter}, false},
		{"relative URL", Config{Endpoints: []Endpoint{{Name: "a", BaseURL: "/v1"}}, Resolve: resolve, Meter: meter}, false},
		{"credentials in URL", Config{Endpoints: []Endpoint{{Name: "a", BaseURL: "https://u:p@x/v1"}}, Resolve: resolve, Meter: meter}, false},
		{"negative price", Config{Endpoints: []Endpoint{{Name: "a", BaseURL: ok.BaseURL, PromptPricePerMTok: -1}}, Resolve: resolve, Meter: meter}, false},
		{"bad max tokens field", Config{Endpoints: []Endpoint{{Name: "a", BaseURL: ok.BaseURL, MaxTokensField: "tokens"}}, Resolve: resolve, Meter: meter}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// An agent that hangs up is still metered and recorded (status 499).
func TestAgentHangsUp(t *testing.T) {
	tests := []struct{ name, body string }{
		{"waiting for the reply", chatBody("slow", "")},
		{"mid-stream", chatBody("slow-stream", `"stream":true`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Budget{MaxTokens: 1000}, nil)
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.gw.URL+"/v1/chat/completions", strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+agentToken)
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					// Read the first event, then hang up.
					_, _ = bufio.NewReader(resp.Body).ReadString('\n')
					cancel()
					resp.Body.Close()
				}
			}()
			time.AfterFunc(300*time.Millisecond, cancel)
			<-done
			var tr []Exchange
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if tr = e.trajectory(); len(tr) > 0 {
					break
				}
			}
			if len(tr) != 1 || tr[0].Status != 499 || tr[0].Error == "" {
				t.Fatalf("trajectory: %+v", tr)
			}
			if u := e.usage(); u.Requests != 1 {
				t.Fatalf("usage after hang-up: %+v", u)
			}
			if strings.Contains(tc.name, "stream") && (!tr[0].UsageEstimated || tr[0].Usage.CompletionTokens == 0) {
				t.Fatalf("partial stream not estimated: %+v", tr[0])
			}
		})
	}
}
