package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/repro/repro/gateway"
	"github.com/repro/repro/sandbox"
	"github.com/repro/repro/store"
	"github.com/repro/repro/verify"
	"github.com/repro/repro/worker"
)

// llmEndpointFile is one entry of --llm-endpoints: the provider key is read from
// the environment variable api_key_env, never from the file.
type llmEndpointFile struct {
	Name                   string   `json:"name"`
	BaseURL                string   `json:"base_url"`
	APIKeyEnv              string   `json:"api_key_env"`
	Models                 []string `json:"models"`
	PromptPricePerMTok     float64  `json:"prompt_price_per_mtok"`
	CompletionPricePerMTok float64  `json:"completion_price_per_mtok"`
	TimeoutSeconds         int      `json:"timeout_seconds"`
	MaxTokensField         string   `json:"max_tokens_field"`
}

// loadLLMEndpoints reads --llm-endpoints (a JSON array; "" for none).
func loadLLMEndpoints(path string) ([]gateway.Endpoint, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--llm-endpoints: %v", err)}
	}
	var items []llmEndpointFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&items); err != nil {
		return nil, usageError{fmt.Sprintf("--llm-endpoints %s: %v", path, err)}
	}
	var out []gateway.Endpoint
	for i, it := range items {
		ep := gateway.Endpoint{Name: it.Name, BaseURL: it.BaseURL, Models: it.Models, PromptPricePerMTok: it.PromptPricePerMTok,
			CompletionPricePerMTok: it.CompletionPricePerMTok, Timeout: time.Duration(it.TimeoutSeconds) * time.Second, MaxTokensField: it.MaxTokensField}
		if it.APIKeyEnv != "" {
			ep.APIKey = os.Getenv(it.APIKeyEnv)
			if ep.APIKey == "" {
				return nil, usageError{fmt.Sprintf("--llm-endpoints %s: entry %d (%s): environment variable %s (its api_key_env) is empty", path, i, it.Name, it.APIKeyEnv)}
			}
		}
		out = append(out, ep)
	}
	return out, nil
}

// storeMeter keeps the gateway's metering in the store.
type storeMeter struct{ st *store.Store }

func (m storeMeter) Usage(ctx context.Context, id string) (gateway.Usage, error) {
	u, err := m.st.GetLLMUsage(ctx, id)
	return gateway.Usage(u), err
}

func (m storeMeter) Add(ctx context.Context, id string, d gateway.Usage) (gateway.Usage, error) {
	u, err := m.st.AddLLMUsage(ctx, id, store.LLMUsage(d))
	return gateway.Usage(u), err
}

// newGateway builds the LLM gateway over the store (nil when no endpoint is configured).
func newGateway(st *store.Store, dataDir string, endpoints []gateway.Endpoint, log *slog.Logger) (*gateway.Gateway, error) {
	if len(endpoints) == 0 {
		return nil, nil
	}
	return gateway.New(gateway.Config{
		Endpoints: endpoints,
		Resolve: func(ctx context.Context, token string) (gateway.Session, error) {
			c, err := st.AgentRunByToken(ctx, token)
			if err != nil {
				return gateway.Session{}, err
			}
			var spec verify.AgentSpec
			if err := json.Unmarshal(c.Spec, &spec); err != nil {
				return gateway.Session{}, err
			}
			if spec.LLM == "" || c.State.Terminal() {
				return gateway.Session{}, fmt.Errorf("agent run %s has no LLM (or has ended)", c.ID)
			}
			return gateway.Session{AgentRunID: c.ID, Endpoint: spec.LLM,
				Budget: gateway.Budget{MaxTokens: spec.Budget.MaxLLMTokens, MaxCostUSD: spec.Budget.MaxLLMCostUSD}}, nil
		},
		Meter:      storeMeter{st},
		Trajectory: &gateway.FileTrajectory{Dir: func(id string) string { return store.CampaignDir(dataDir, id) }},
		Log:        log.With("component", "gateway"),
	})
}

// agentListener is where agent containers reach repro: an internal Docker network
// whose only reachable address is this listener (sandbox.Firewall).
type agentListener struct {
	net    sandbox.AgentNetwork
	ln     net.Listener
	remove func(context.Context) error
}

// startAgentNetwork makes the agent network, listens on its gateway and installs
// the firewall. An error leaves agents disabled (the caller logs it).
func startAgentNetwork(ctx context.Context, docker *sandbox.Docker, instance string, port int) (*agentListener, error) {
	short := strings.ReplaceAll(instance, "-", "")
	if len(short) > 10 {
		short = short[:10]
	}
	n, err := docker.EnsureAgentNetwork(ctx, "repro-agents-"+short, "rag"+short, instance)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(n.Gateway, fmt.Sprint(port)))
	if err != nil {
		return nil, fmt.Errorf("agent listener on %s: %w", n.Gateway, err)
	}
	remove, err := sandbox.Firewall(ctx, n, ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &agentListener{net: n, ln: ln, remove: remove}, nil
}

func (a *agentListener) url() string { return "http://" + a.ln.Addr().String() }

func (a *agentListener) workerConfig() *worker.Agents {
	return &worker.Agents{Network: a.net.Name, URL: a.url()}
}

// serve answers agent containers until ctx ends.
func (a *agentListener) serve(ctx context.Context, h http.Handler, log *slog.Logger) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.Serve(a.ln); err != nil && err != http.ErrServerClosed {
		log.Error("agent listener", "err", err)
	}
}

// close removes the network and its firewall when no agent container is left on
// it (containers of running agents keep both, for the next start).
func (a *agentListener) close(ctx context.Context, docker *sandbox.Docker, log *slog.Logger) {
	if err := docker.RemoveAgentNetwork(ctx, a.net.Name); err != nil {
		log.Info("agent network kept (agents still attached)", "network", a.net.Name, "err", err)
		return
	}
	if err := a.remove(ctx); err != nil {
		log.Warn("removing the agent firewall", "err", err)
	}
}

func endpointNames(eps []gateway.Endpoint) []string {
	names := make([]string, 0, len(eps))
	for _, e := range eps {
		names = append(names, e.Name)
	}
	return names
}
