package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// TestDockerdRestartedDuringARun: the engine goes away under a running run (dockerd
// killed and started again). The run must end "error" — the infrastructure's fault,
// never the script's — with a reason, and the queue must go on: the next run succeeds.
// It restarts the machine's dockerd, so it only runs when REPRO_TEST_DOCKERD_RESTART=1
// (`make test` runs it alone, after every other test).
func TestDockerdRestartedDuringARun(t *testing.T) {
	if os.Getenv("REPRO_TEST_DOCKERD_RESTART") != "1" {
		t.Skip("restarts the machine's dockerd: set REPRO_TEST_DOCKERD_RESTART=1 (make test does, in a step of its own)")
	}
	s := startStack(t)
	tok := s.team("dockerd")
	r := s.submit(tok, map[string]any{"environment": "bb", "command": []string{"sh", "-c", "echo started; sleep 60"}}, map[string]string{"x": "x"})
	s.wait(tok, r.ID, 30*time.Second, func(r runView) bool { return r.State == "running" })
	time.Sleep(500 * time.Millisecond)

	if out, err := exec.Command("pkill", "-x", "dockerd").CombinedOutput(); err != nil {
		t.Fatalf("pkill dockerd: %v %s", err, out)
	}
	for i := 0; i < 100 && exec.Command("pgrep", "-x", "dockerd").Run() == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	// Whatever happens next, the engine comes back for the tests after this one.
	restarted := false
	restart := func() {
		if restarted {
			return
		}
		restarted = true
		if out, err := exec.Command("sh", "-c", "nohup dockerd >>/tmp/repro-dockerd.log 2>&1 &").CombinedOutput(); err != nil {
			t.Fatalf("starting dockerd: %v %s", err, out)
		}
	}
	t.Cleanup(restart)
	r = s.waitEnd(tok, r.ID, time.Minute)
	if r.State != "error" || r.Reason == "" {
		t.Fatalf("run under a vanished engine: state %s reason %q; want error with a reason", r.State, r.Reason)
	}
	t.Logf("reason: %s", r.Reason)
	restart()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := s.docker.Ping(ctx, pingOptions())
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not come back: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	next := s.submit(tok, map[string]any{"environment": "bb", "command": []string{"sh", "-c", "echo after"}}, map[string]string{"x": "x"})
	next = s.waitEnd(tok, next.ID, 2*time.Minute)
	if next.State != "succeeded" {
		t.Fatalf("the run after the engine came back: %s %q", next.State, next.Reason)
	}
	if code, _, body := s.request("GET", "/readyz", "", nil, ""); code != 200 || !strings.Contains(string(body), `"docker":"ok"`) {
		t.Fatalf("/readyz after the restart: %d %s", code, body)
	}
	// The container the engine lost track of was left for the reaper, which runs at
	// every start (and every --reap-every): restarting serve removes it.
	s.stop()
	s.start()
	deadline = time.Now().Add(30 * time.Second)
	for len(s.containers(r.ID)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the ended run's container is still there after a restart: %v", s.containers(r.ID))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func pingOptions() client.PingOptions { return client.PingOptions{NegotiateAPIVersion: true} }
