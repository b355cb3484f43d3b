package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
)

// chatRequest is a validated chat completion request.
type chatRequest struct {
	fields   map[string]json.RawMessage
	model    string
	messages json.RawMessage
	stream   bool
	// wantsUsage: the agent itself asked for stream_options.include_usage.
	wantsUsage bool
	n          int64
	modified   bool
}

// badRequest is a 400 naming the offending field.
type badRequest struct{ param, code, msg string }

func invalid(param, format string, args ...any) *badRequest {
	return &badRequest{param: param, code: "invalid_request", msg: fmt.Sprintf(format, args...)}
}

// parseChat validates body against endpoint ep.
func parseChat(body []byte, ep *Endpoint) (*chatRequest, *badRequest) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		if err != nil && !json.Valid(body) {
			return nil, &badRequest{code: "invalid_json", msg: "request body is not valid JSON: " + err.Error()}
		}
		return nil, &badRequest{code: "invalid_json", msg: "request body must be a JSON object"}
	}
	req := &chatRequest{fields: fields, n: 1}

	raw, ok := present(fields, "model")
	if !ok {
		return nil, invalid("model", "missing required field \"model\"")
	}
	if err := json.Unmarshal(raw, &req.model); err != nil {
		return nil, invalid("model", "field \"model\" must be a string")
	}
	if req.model == "" {
		return nil, invalid("model", "field \"model\" must not be empty")
	}
	if !allowsAny(ep) && !slices.Contains(ep.Models, req.model) {
		return nil, &badRequest{param: "model", code: "model_not_allowed",
			msg: fmt.Sprintf("model %q is not allowed for this agent run; allowed models: %s", req.model, strings.Join(ep.Models, ", "))}
	}

	raw, ok = present(fields, "messages")
	if !ok {
		return nil, invalid("messages", "missing required field \"messages\"")
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return nil, invalid("messages", "field \"messages\" must be an array of messages")
	}
	if len(msgs) == 0 {
		return nil, invalid("messages", "field \"messages\" must be a non-empty array")
	}
	req.messages = raw

	if raw, ok := present(fields, "stream"); ok {
		if err := json.Unmarshal(raw, &req.stream); err != nil {
			return nil, invalid("stream", "field \"stream\" must be a boolean")
		}
	}
	for _, f := range []string{"max_tokens", "max_completion_tokens"} {
		if _, err := intField(fields, f, 1); err != nil {
			return nil, err
		}
	}
	if n, err := intField(fields, "n", 1); err != nil {
		return nil, err
	} else if n > 0 {
		req.n = n
	}
	if raw, ok := present(fields, "stream_options"); ok {
		var so struct {
			IncludeUsage *bool `json:"include_usage"`
		}
		if err := json.Unmarshal(raw, &so); err != nil || raw[0] != '{' {
			return nil, invalid("stream_options", "field \"stream_options\" must be an object")
		}
		req.wantsUsage = so.IncludeUsage != nil && *so.IncludeUsage
	}
	return req, nil
}

// present returns fields[name] unless it is absent or null.
func present(fields map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	raw, ok := fields[name]
	if !ok {
		return nil, false
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false
	}
	return raw, true
}

// intField returns the integer field name (0 if absent or null); it must be
// >= min.
func intField(fields map[string]json.RawMessage, name string, min int64) (int64, *badRequest) {
	raw, ok := present(fields, name)
	if !ok {
		return 0, nil
	}
	var v int64
	if err := json.Unmarshal(raw, &v); err != nil || v < min {
		return 0, invalid(name, "field %q must be an integer >= %d", name, min)
	}
	return v, nil
}

func (r *chatRequest) set(name string, v any) {
	b, _ := json.Marshal(v)
	r.fields[name] = b
	r.modified = true
}

// capTokens lowers the completion limits to cap (see the package doc) and
// returns the cap imposed, 0 if none.
func (r *chatRequest) capTokens(limit int64, ep *Endpoint) int64 {
	if limit < 0 {
		return 0
	}
	if r.n > 1 {
		limit /= r.n
	}
	limit = max(limit, 1)
	imposed := int64(0)
	sent := false
	for _, f := range []string{"max_tokens", "max_completion_tokens"} {
		v, _ := intField(r.fields, f, 1)
		if v == 0 {
			continue
		}
		sent = true
		if v > limit {
			r.set(f, limit)
			imposed = limit
		}
	}
	if !sent && limit <= ep.MaxOutputTokens {
		r.set(ep.MaxTokensField, limit)
		imposed = limit
	}
	return imposed
}

// forceStreamUsage sets stream_options.include_usage = true.
func (r *chatRequest) forceStreamUsage() {
	if r.wantsUsage {
		return
	}
	so := map[string]json.RawMessage{}
	if raw, ok := present(r.fields, "stream_options"); ok {
		_ = json.Unmarshal(raw, &so)
	}
	so["include_usage"] = json.RawMessage("true")
	r.set("stream_options", so)
}

// budgetRefusal returns why usage u leaves nothing of budget b, or "".
func budgetRefusal(b Budget, u Usage) string {
	if b.MaxTokens > 0 && u.TotalTokens >= b.MaxTokens {
		return fmt.Sprintf("token budget of this agent run exhausted: %d of %d tokens used", u.TotalTokens, b.MaxTokens)
	}
	if b.MaxCostUSD > 0 && u.CostUSD >= b.MaxCostUSD {
		return fmt.Sprintf("cost budget of this agent run exhausted: $%.6f of $%.6f used", u.CostUSD, b.MaxCostUSD)
	}
	return ""
}

// completionLimit is the most completion tokens the rest of budget b allows
// given usage u, or -1 if unlimited.
func completionLimit(b Budget, u Usage, ep *Endpoint) int64 {
	limit := int64(-1)
	if b.MaxTokens > 0 {
		limit = b.MaxTokens - u.TotalTokens
	}
	if b.MaxCostUSD > 0 && ep.CompletionPricePerMTok > 0 {
		byCost := (b.MaxCostUSD - u.CostUSD) / ep.CompletionPricePerMTok * 1e6
		c := int64(math.MaxInt64 / 2)
		if byCost < float64(c) {
			c = int64(math.Floor(byCost))
		}
		if limit < 0 || c < limit {
			limit = c
		}
	}
	return limit
}

// cost of u's tokens at ep's prices.
func cost(ep *Endpoint, prompt, completion int64) float64 {
	return float64(prompt)*ep.PromptPricePerMTok/1e6 + float64(completion)*ep.CompletionPricePerMTok/1e6
}

// estimate is ceil(n/4) tokens.
func estimate(n int) int64 { return int64((n + 3) / 4) }

// wireUsage is the OpenAI "usage" object.
type wireUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func (w *wireUsage) usage(ep *Endpoint) Usage {
	p, c := max(w.PromptTokens, 0), max(w.CompletionTokens, 0)
	return Usage{
		Requests:         1,
		PromptTokens:     p,
		CompletionTokens: c,
		TotalTokens:      max(w.TotalTokens, p+c),
		CostUSD:          cost(ep, p, c),
	}
}

func estimatedUsage(ep *Endpoint, promptBytes, completionBytes int) Usage {
	p, c := estimate(promptBytes), estimate(completionBytes)
	return Usage{Requests: 1, PromptTokens: p, CompletionTokens: c, TotalTokens: p + c, CostUSD: cost(ep, p, c)}
}

// call tracks one exchange being served.
type call struct {
	g     *Gateway
	w     http.ResponseWriter
	r     *http.Request
	ep    *Endpoint
	start time.Time
	ex    Exchange
	// ctx outlives the agent's request, for metering and recording.
	ctx context.Context
}

// fail answers the agent with a gateway error and finishes the exchange.
func (c *call) fail(status int, typ, code, param, msg string) {
	body := errorBody(typ, code, param, msg)
	if c.ex.Response == nil {
		c.ex.Response = body
	}
	c.ex.Status = status
	c.ex.Error = msg
	if code == "budget_exceeded" {
		c.w.Header().Set("X-Should-Retry", "false")
	}
	writeRaw(c.w, status, "application/json", body)
	c.finish()
}

// finish records and logs the exchange.
func (c *call) finish() {
	c.ex.LatencyMS = time.Since(c.start).Milliseconds()
	if c.g.traj != nil {
		if err := c.g.traj.Record(c.ctx, c.ex.AgentRunID, c.ex); err != nil {
			c.g.log.Error("llm gateway: cannot record the exchange in the trajectory",
				"agent_run", c.ex.AgentRunID, "err", err)
		}
	}
	level := slog.LevelInfo
	if c.ex.Status >= 500 {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("agent_run", c.ex.AgentRunID),
		slog.String("endpoint", c.ex.Endpoint),
		slog.String("model", c.ex.Model),
		slog.Bool("stream", c.ex.Stream),
		slog.Int("status", c.ex.Status),
		slog.Int64("prompt_tokens", c.ex.Usage.PromptTokens),
		slog.Int64("completion_tokens", c.ex.Usage.CompletionTokens),
		slog.Float64("cost_usd", c.ex.Usage.CostUSD),
		slog.Int64("latency_ms", c.ex.LatencyMS),
	}
	if c.ex.UpstreamStatus != 0 {
		attrs = append(attrs, slog.Int("upstream_status", c.ex.UpstreamStatus))
	}
	if c.ex.UsageEstimated {
		attrs = append(attrs, slog.Bool("usage_estimated", true))
	}
	if c.ex.MaxTokensCap != 0 {
		attrs = append(attrs, slog.Int64("max_tokens_cap", c.ex.MaxTokensCap))
	}
	if c.ex.Refused != "" {
		attrs = append(attrs, slog.String("refused", c.ex.Refused))
	} else if c.ex.Error != "" {
		attrs = append(attrs, slog.String("error", c.ex.Error))
	}
	c.g.log.LogAttrs(c.ctx, level, "llm exchange", attrs...)
}

// meter adds u to the agent run.
func (c *call) meter(u Usage, estimated bool) {
	c.ex.Usage = u
	c.ex.UsageEstimated = estimated
	total, err := c.g.meter.Add(c.ctx, c.ex.AgentRunID, u)
	if err != nil {
		c.g.log.Error("llm gateway: cannot meter usage", "agent_run", c.ex.AgentRunID,
			"total_tokens", u.TotalTokens, "cost_usd", u.CostUSD, "err", err)
		return
	}
	c.ex.RunUsage = &total
}

// hungUp finishes an exchange whose agent went away.
func (c *call) hungUp() {
	c.ex.Status = 499
	if c.ex.Error == "" {
		c.ex.Error = "the agent closed the request"
	}
	c.finish()
}

// chat serves POST /v1/chat/completions.
func (g *Gateway) chat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sess, ep, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	c := &call{
		g: g, w: w, r: r, ep: ep, start: start,
		ctx: context.WithoutCancel(r.Context()),
		ex:  Exchange{Time: start.UTC(), AgentRunID: sess.AgentRunID, Endpoint: ep.Name},
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			c.fail(http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "",
				fmt.Sprintf("request body exceeds %d bytes", g.maxBody))
			return
		}
		c.ex.Error = "cannot read the request body: " + err.Error()
		c.hungUp()
		return
	}
	c.ex.Request = rawOrString(body)
	req, bad := parseChat(body, ep)
	if bad != nil {
		c.fail(http.StatusBadRequest, "invalid_request_error", bad.code, bad.param, bad.msg)
		return
	}
	c.ex.Model, c.ex.Stream = req.model, req.stream

	if sess.Budget.Limited() {
		unlock, err := g.locks.lock(r.Context(), sess.AgentRunID)
		if err != nil {
			c.hungUp()
			return
		}
		defer unlock()
		used, err := g.meter.Usage(r.Context(), sess.AgentRunID)
		if err != nil {
			g.log.Error("llm gateway: cannot read usage", "agent_run", sess.AgentRunID, "err", err)
			c.fail(http.StatusInternalServerError, "server_error", "internal_error", "",
				"cannot read the usage of this agent run")
			return
		}
		if why := budgetRefusal(sess.Budget, used); why != "" {
			c.ex.Refused = why
			c.ex.RunUsage = &used
			c.fail(http.StatusTooManyRequests, "insufficient_quota", "budget_exceeded", "", why)
			return
		}
		c.ex.MaxTokensCap = req.capTokens(completionLimit(sess.Budget, used, ep), ep)
	}
	if req.stream {
		req.forceStreamUsage()
	}
	if req.modified {
		body, _ = json.Marshal(req.fields)
		c.ex.Request = body
	}
	c.forward(req, body)
}

// forward sends body upstream and relays the reply.
func (c *call) forward(req *chatRequest, body []byte) {
	ep := c.ep
	ctx, cancel := context.WithTimeout(c.r.Context(), ep.Timeout)
	defer cancel()
	up, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.BaseURL+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		c.fail(http.StatusInternalServerError, "server_error", "internal_error", "", "cannot build the upstream request")
		return
	}
	up.Header.Set("Content-Type", "application/json")
	c.g.setUpstreamHeaders(up, ep, c.r.Header.Get("Accept"))

	resp, err := c.g.client.Do(up)
	if err != nil {
		c.meter(Usage{Requests: 1}, false)
		c.upstreamFailed(err)
		return
	}
	defer resp.Body.Close()
	c.ex.UpstreamStatus = resp.StatusCode

	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	if ok && req.stream && isEventStream(resp.Header.Get("Content-Type")) {
		c.relayStream(req, resp)
		return
	}

	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		c.meter(Usage{Requests: 1}, false)
		c.upstreamFailed(err)
		return
	}
	if len(raw) > maxResponseBytes {
		c.meter(Usage{Requests: 1}, false)
		c.fail(http.StatusBadGateway, "server_error", "upstream_error", "",
			fmt.Sprintf("model endpoint %q sent a reply larger than %d bytes", ep.Name, maxResponseBytes))
		return
	}
	raw = c.g.redact(raw)
	c.ex.Response = rawOrString(raw)
	switch {
	case ok:
		var reply struct {
			Choices json.RawMessage `json:"choices"`
			Usage   *wireUsage      `json:"usage"`
		}
		if json.Unmarshal(raw, &reply) == nil && reply.Usage != nil {
			c.meter(reply.Usage.usage(ep), false)
		} else {
			c.meter(estimatedUsage(ep, len(req.messages), len(reply.Choices)), true)
		}
		c.ex.Status = resp.StatusCode
		writeRaw(c.w, resp.StatusCode, contentTypeOr(resp.Header.Get("Content-Type"), "application/json"), raw)
		c.finish()
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		c.meter(Usage{Requests: 1}, false)
		c.ex.Status = resp.StatusCode
		c.ex.Error = fmt.Sprintf("model endpoint %q answered HTTP %d", ep.Name, resp.StatusCode)
		writeRaw(c.w, resp.StatusCode, contentTypeOr(resp.Header.Get("Content-Type"), "application/json"), raw)
		c.finish()
	default:
		c.meter(Usage{Requests: 1}, false)
		c.fail(http.StatusBadGateway, "server_error", "upstream_error", "",
			fmt.Sprintf("model endpoint %q failed: HTTP %d (the provider's reply is in the trajectory)", ep.Name, resp.StatusCode))
	}
}

// upstreamFailed answers a transport error or timeout.
func (c *call) upstreamFailed(err error) {
	switch {
	case c.r.Context().Err() != nil:
		c.hungUp()
	case errors.Is(err, context.DeadlineExceeded):
		c.fail(http.StatusBadGateway, "server_error", "upstream_timeout", "",
			fmt.Sprintf("model endpoint %q did not answer within %s", c.ep.Name, c.ep.Timeout))
	default:
		c.fail(http.StatusBadGateway, "server_error", "upstream_unavailable", "",
			fmt.Sprintf("model endpoint %q is unreachable: %s", c.ep.Name, c.g.redactString(err.Error())))
	}
}

func isEventStream(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "text/event-stream"
}
