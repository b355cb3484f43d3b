package worker

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/repro/repro/fault"
	"github.com/repro/repro/sandbox"
	"github.com/repro/repro/store"
)

// Agents is how agent containers reach repro: the only network they join leads to
// repro's agent listener (sandbox.Firewall drops everything else).
type Agents struct {
	Network string // the sandbox.AgentNetwork agent containers join
	URL     string // repro's agent listener as the containers see it, e.g. http://172.18.0.1:7070
}

// Files of an agent run's campaign folder (store.CampaignDir) the worker reads.
const (
	AgentTokenFile = "token" // the agent run's bearer token (0600)
	AgentTaskDir   = "task"  // the task bundle, mounted read-only at /task
	AgentTaskMount = "/task"
)

// agentSandbox turns an agent run's container into an agent's: it joins the agent
// network, sees the task at /task, and gets its token and repro's URLs. Other runs
// are left as they are.
func (e *Executor) agentSandbox(r store.Run, spec *sandbox.Spec) error {
	if r.Purpose != store.PurposeAgent {
		return nil
	}
	if e.cfg.Agents == nil || e.cfg.Agents.Network == "" {
		return fault.Infraf("worker %s runs no agents (it has no agent network)", e.cfg.Host)
	}
	dir := store.CampaignDir(e.cfg.DataDir, r.ParentID)
	token, err := os.ReadFile(filepath.Join(dir, AgentTokenFile))
	if err != nil {
		return fault.Infraf("agent run %s: its token: %w", r.ParentID, err)
	}
	tok := strings.TrimSpace(string(token))
	spec.Network = e.cfg.Agents.Network
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: filepath.Join(dir, AgentTaskDir), Target: AgentTaskMount})
	url := strings.TrimRight(e.cfg.Agents.URL, "/")
	for k, v := range map[string]string{
		"REPRO_AGENT_URL":   url + "/agent/v1",
		"REPRO_AGENT_TOKEN": tok,
		"REPRO_TASK_DIR":    AgentTaskMount,
		// OpenAI-compatible clients find the gateway by themselves.
		"OPENAI_BASE_URL": url + "/llm/v1",
		"OPENAI_API_KEY":  tok,
	} {
		spec.Env[k] = v
	}
	return nil
}
