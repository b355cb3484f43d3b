package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// ChromiumTimeout bounds one headless Chromium invocation.
const ChromiumTimeout = 60 * time.Second

// Chromium returns the path of Debian's chromium: $REPRO_CHROMIUM, then "chromium" on
// PATH, then /usr/bin/chromium. Without one the test is skipped (or fails where
// REPRO_TEST_REQUIRE names "browser"). Install it with `apt-get install chromium`.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("REPRO_CHROMIUM"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("REPRO_CHROMIUM=%s is not an executable: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if p, err := exec.LookPath("/usr/bin/chromium"); err == nil {
		return p
	}
	Missing(t, "browser", "chromium not found in $REPRO_CHROMIUM, PATH or /usr/bin/chromium (apt-get install chromium)")
	return ""
}

// Screenshot loads url in headless chromium with a width×height window and writes a
// PNG of the viewport to outPNG. Chromium's harmless complaints on stderr (dbus,
// GPU...) are ignored: it fails only when the PNG is missing or empty, or on timeout.
func Screenshot(t testing.TB, chromium, url, outPNG string, width, height int) error {
	t.Helper()
	out, err := filepath.Abs(outPNG)
	if err != nil {
		return err
	}
	_ = os.Remove(out)
	_, stderr, runErr := runChromium(t, chromium,
		"--window-size="+strconv.Itoa(width)+","+strconv.Itoa(height),
		"--screenshot="+out, url)
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		return fmt.Errorf("chromium wrote no screenshot of %s (run: %v): %s", url, runErr, tail(stderr, 2000))
	}
	return nil
}

// DumpDOM loads url in headless chromium and returns the serialized DOM.
func DumpDOM(t testing.TB, chromium, url string) (string, error) {
	t.Helper()
	stdout, stderr, err := runChromium(t, chromium, "--dump-dom", url)
	if err != nil && len(stdout) == 0 {
		return "", fmt.Errorf("chromium --dump-dom %s: %v: %s", url, err, tail(stderr, 2000))
	}
	if len(bytes.TrimSpace(stdout)) == 0 {
		return "", fmt.Errorf("chromium --dump-dom %s printed nothing: %s", url, tail(stderr, 2000))
	}
	return string(stdout), nil
}

// runChromium runs chromium headless with a fresh profile, in its own process group,
// killed with the whole group after ChromiumTimeout (and with the test binary).
func runChromium(t testing.TB, chromium string, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	profile := t.TempDir()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-default-apps",
		"--disable-extensions", "--disable-sync", "--no-first-run", "--hide-scrollbars",
		"--force-device-scale-factor=1",
		"--user-data-dir=" + profile,
	}
	ctx, cancel := context.WithTimeout(context.Background(), ChromiumTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	// Keep chromium's caches and config inside the test's temporary directory.
	cmd.Env = append(os.Environ(), "HOME="+profile, "XDG_CONFIG_HOME="+profile, "XDG_CACHE_HOME="+profile)
	// Files, not pipes: a helper process that outlives chromium cannot hold up Wait.
	o, err := os.Create(filepath.Join(profile, "stdout"))
	if err != nil {
		return nil, nil, err
	}
	defer o.Close()
	e, err := os.Create(filepath.Join(profile, "stderr"))
	if err != nil {
		return nil, nil, err
	}
	defer e.Close()
	cmd.Stdout, cmd.Stderr = o, e
	err = cmd.Run()
	// Chromium leaves helper processes (zygote, crashpad) behind now and then: end the group.
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("chromium timed out after %s: %w", ChromiumTimeout, errors.Join(err, ctx.Err()))
	}
	stdout, _ = os.ReadFile(o.Name())
	stderr, _ = os.ReadFile(e.Name())
	return stdout, stderr, err
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
