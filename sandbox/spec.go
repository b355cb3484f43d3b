// Package sandbox runs one job in one locked-down Docker container: it turns a Spec
// into Docker's create options (ContainerConfig, pure), and drives the container's
// life (Docker.Run): create or re-attach, start, copy the complete output, enforce
// the wall-time, cancel and output limits, and read the result.
//
// # Sandbox defaults
//
// Every container made from a Spec has: no network (NetworkMode "none"; an agent
// container may join an agent network instead, see Spec.Network); a read-only
// root filesystem; a tmpfs at /tmp (size Limits.TmpBytes, mode 1777, nosuid, nodev,
// exec so that JIT compilers such as Triton can load what they build); the host
// Workspace bind-mounted read-write at /workspace, which is the working directory;
// Mounts bind-mounted read-only (non-recursively, so that no writable submount can
// leak in); all capabilities dropped; no-new-privileges; the daemon's default
// seccomp profile; a non-root user (65534:65534 unless Spec.User says otherwise;
// root is refused); memory (swap disabled: MemorySwap = Memory), CPU and pids
// limits; a private IPC namespace with /dev/shm of Limits.ShmBytes; an init process
// (docker-init) as PID 1 that forwards signals and reaps orphans; no stdin and no
// TTY; core dumps disabled; no restart policy; the json-file log driver; the labels
// repro.run-id and repro.managed=true. No host path other than Workspace and Mounts
// is visible, and paths that would expose the Docker socket are refused.
//
// The image's ENTRYPOINT is not used: Spec.Command is the exact argv that runs
// (under docker-init), with no shell.
//
// Zero limits get the defaults below (Default*); they are deliberately modest
// fallbacks so that a forgotten field never means "unlimited": the caller (the
// worker) is expected to set real values per task and host.
package sandbox

import (
	"fmt"
	"maps"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"

	"github.com/repro/repro/fault"
)

// Labels every sandbox container carries.
const (
	// LabelRunID holds Spec.RunID; List and a restarted worker find containers by it.
	LabelRunID = "repro.run-id"
	// LabelManaged is "true" on every container this package creates.
	LabelManaged = "repro.managed"
)

// Fixed paths inside the container.
const (
	// WorkspaceDir is where Spec.Workspace appears, read-write; it is the working directory.
	WorkspaceDir = "/workspace"
	// TmpDir is the size-limited tmpfs.
	TmpDir = "/tmp"
)

// Defaults applied by ContainerConfig and Run to zero fields of a Spec.
const (
	DefaultUser        = "65534:65534" // nobody:nogroup
	DefaultStopGrace   = 10 * time.Second
	DefaultTimeout     = 24 * time.Hour // wall time, from the container's StartedAt
	DefaultMemoryBytes = 2 << 30        // 2 GiB, swap disabled; /tmp and /dev/shm count toward it
	DefaultNanoCPUs    = 1_000_000_000  // 1 CPU
	DefaultPidsLimit   = 512
	DefaultTmpBytes    = 1 << 30 // 1 GiB tmpfs at /tmp
	DefaultShmBytes    = 1 << 30 // 1 GiB /dev/shm
	DefaultLogBytes    = 2 << 30 // 2 GiB of output, then the container is killed
	containerPrefix    = "repro-run-"
	minMemoryBytes     = 6 << 20 // Docker refuses less than 6 MiB
	logDriver          = "json-file"
	logDiskFactor      = 16        // json-file max-size = logDiskFactor × LogBytes ...
	minLogDiskBytes    = 256 << 20 // ... but at least this
)

// Mount is a host path made visible, always read-only, inside the container.
type Mount struct {
	Source string // absolute host path; it must exist
	Target string // absolute container path; not /, /workspace, /tmp, /dev/shm, nor under /proc, /sys, /dev
}

// Limits bound what a container may use. Zero means the package default (Default*);
// negative values are invalid.
type Limits struct {
	MemoryBytes int64 // hard memory limit; swap disabled (MemorySwap = Memory)
	NanoCPUs    int64 // CPU quota in 1e-9 CPUs
	PidsLimit   int64 // maximum number of processes/threads
	TmpBytes    int64 // size of the tmpfs at /tmp (counts toward MemoryBytes)
	ShmBytes    int64 // size of /dev/shm (counts toward MemoryBytes; large for PyTorch)
	// LogBytes caps the output copied by Run: past it the rest is discarded, the
	// container is killed and Result.LogTruncated is set.
	LogBytes int64
	// WorkspaceBytes caps the disk the run may use under /workspace. Unlike the
	// other limits, zero means uncapped (a plain host directory). When set, the
	// caller must have made Spec.Workspace with PrepareWorkspace(dir, WorkspaceBytes)
	// (a dedicated loop-mounted filesystem; see quota_linux.go); once the workspace
	// holds WorkspaceBytes Run kills the container and sets Result.WorkspaceExceeded.
	WorkspaceBytes int64
}

// Spec describes one job in one container.
type Spec struct {
	RunID   string            // label repro.run-id; container name "repro-run-<RunID>"; [A-Za-z0-9][A-Za-z0-9_.-]{0,127}
	Image   string            // a local image reference or ID (nothing is pulled)
	Command []string          // argv, no shell; replaces the image's ENTRYPOINT and CMD
	Env     map[string]string // environment; the image's own ENV is kept underneath
	// Workspace is a host directory, prepared (and chowned to User) by the caller,
	// bind-mounted read-write at /workspace, the working directory.
	Workspace string
	Mounts    []Mount // read-only data
	// Timeout is the wall-time limit counted from the container's StartedAt (so it
	// survives a worker restart). Zero means DefaultTimeout.
	Timeout time.Duration
	// StopGrace is the time between SIGTERM and SIGKILL when Run stops the container
	// (rounded up to whole seconds: Docker's unit). Zero means DefaultStopGrace.
	StopGrace time.Duration
	User      string            // "uid:gid" or a name known to the image; default DefaultUser; never root
	Limits    Limits            // resource limits
	Labels    map[string]string // extra labels; repro.run-id and repro.managed are reserved
	// Devices are GPU device requests (sandbox/gpu: an allocation's DeviceRequests,
	// driver "nvidia" by UUID); none for a CPU run.
	Devices []container.DeviceRequest
	// Network is "" (the default) for no network at all; otherwise, for agent
	// containers only, the name of an AgentNetwork (EnsureAgentNetwork) the
	// container joins. Its host firewall (Firewall) must be in place before the
	// container starts: the network alone does not keep it from the host's services.
	// Such a container has no DNS resolver beyond Docker's names on the network.
	Network string
}

var runIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// ContainerName is the name of the container for runID.
func ContainerName(runID string) string { return containerPrefix + runID }

// validRunID reports a user error unless runID is safe in a container name.
func validRunID(runID string) error {
	if !runIDPattern.MatchString(runID) {
		return fault.Userf("sandbox: Spec.RunID %q: must match %s", runID, runIDPattern)
	}
	return nil
}

// normalize validates spec and returns it with defaults filled in. Every error is a
// user fault (fault.Userf) naming the offending field.
func normalize(spec Spec) (Spec, error) {
	if err := validRunID(spec.RunID); err != nil {
		return spec, err
	}
	if spec.Image == "" || strings.ContainsFunc(spec.Image, isSpaceOrCtl) {
		return spec, fault.Userf("sandbox: Spec.Image %q: must be a non-empty image reference", spec.Image)
	}
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return spec, fault.Userf("sandbox: Spec.Command: must be a non-empty argv with a non-empty program")
	}
	for i, a := range spec.Command {
		if strings.ContainsRune(a, 0) {
			return spec, fault.Userf("sandbox: Spec.Command[%d]: contains a NUL byte", i)
		}
	}
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return spec, fault.Userf("sandbox: Spec.Env[%q]: a name must be non-empty without '=' or NUL, a value without NUL", k)
		}
	}
	if err := validHostPath("Spec.Workspace", spec.Workspace); err != nil {
		return spec, err
	}
	targets := map[string]bool{}
	for i, m := range spec.Mounts {
		field := fmt.Sprintf("Spec.Mounts[%d]", i)
		if err := validHostPath(field+".Source", m.Source); err != nil {
			return spec, err
		}
		if err := validTarget(field+".Target", m.Target); err != nil {
			return spec, err
		}
		t := path.Clean(m.Target)
		if targets[t] {
			return spec, fault.Userf("sandbox: %s.Target %q: mounted twice", field, m.Target)
		}
		targets[t] = true
	}
	if spec.Network != "" {
		if err := validNetworkName(spec.Network, fault.Userf, "Spec.Network"); err != nil {
			return spec, err
		}
	}
	if spec.Timeout < 0 {
		return spec, fault.Userf("sandbox: Spec.Timeout %v: must not be negative", spec.Timeout)
	}
	if spec.StopGrace < 0 {
		return spec, fault.Userf("sandbox: Spec.StopGrace %v: must not be negative", spec.StopGrace)
	}
	if spec.User == "" {
		spec.User = DefaultUser
	}
	if err := validUser(spec.User); err != nil {
		return spec, err
	}
	for k := range spec.Labels {
		if k == "" || k == LabelRunID || k == LabelManaged {
			return spec, fault.Userf("sandbox: Spec.Labels[%q]: empty or reserved label", k)
		}
	}
	for _, l := range []struct {
		name string
		v    *int64
		def  int64
	}{
		{"MemoryBytes", &spec.Limits.MemoryBytes, DefaultMemoryBytes},
		{"NanoCPUs", &spec.Limits.NanoCPUs, DefaultNanoCPUs},
		{"PidsLimit", &spec.Limits.PidsLimit, DefaultPidsLimit},
		{"TmpBytes", &spec.Limits.TmpBytes, DefaultTmpBytes},
		{"ShmBytes", &spec.Limits.ShmBytes, DefaultShmBytes},
		{"LogBytes", &spec.Limits.LogBytes, DefaultLogBytes},
	} {
		if *l.v < 0 {
			return spec, fault.Userf("sandbox: Spec.Limits.%s %d: must not be negative", l.name, *l.v)
		}
		if *l.v == 0 {
			*l.v = l.def
		}
	}
	if err := validWorkspaceBytes(spec.Limits.WorkspaceBytes); err != nil {
		return spec, err
	}
	if spec.Limits.MemoryBytes < minMemoryBytes {
		return spec, fault.Userf("sandbox: Spec.Limits.MemoryBytes %d: Docker needs at least %d", spec.Limits.MemoryBytes, minMemoryBytes)
	}
	if spec.Timeout == 0 {
		spec.Timeout = DefaultTimeout
	}
	if spec.StopGrace == 0 {
		spec.StopGrace = DefaultStopGrace
	}
	return spec, nil
}

func isSpaceOrCtl(r rune) bool { return r <= ' ' || r == 0x7f }

// dockerSockets are host paths that must never be visible in a sandbox: mounting
// one of them, or a directory above one, would hand the script the Docker daemon.
var dockerSockets = []string{"/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock"}

func validHostPath(field, p string) error {
	if p == "" || !path.IsAbs(p) {
		return fault.Userf("sandbox: %s %q: must be an absolute host path", field, p)
	}
	c := path.Clean(p)
	for _, s := range dockerSockets {
		if c == s || c == "/" || strings.HasPrefix(s, c+"/") {
			return fault.Userf("sandbox: %s %q: would expose the host root or the Docker socket", field, p)
		}
	}
	return nil
}

func validTarget(field, t string) error {
	if t == "" || !path.IsAbs(t) {
		return fault.Userf("sandbox: %s %q: must be an absolute container path", field, t)
	}
	c := path.Clean(t)
	switch c {
	case "/", WorkspaceDir, TmpDir, "/dev/shm":
		return fault.Userf("sandbox: %s %q: reserved by the sandbox", field, t)
	}
	for _, p := range []string{"/proc", "/sys", "/dev"} {
		if c == p || strings.HasPrefix(c, p+"/") {
			return fault.Userf("sandbox: %s %q: reserved by the sandbox", field, t)
		}
	}
	return nil
}

// validUser refuses root (by name or uid 0) and the root group.
func validUser(u string) error {
	user, group, _ := strings.Cut(u, ":")
	if user == "" || strings.ContainsFunc(u, isSpaceOrCtl) {
		return fault.Userf("sandbox: Spec.User %q: must be user[:group]", u)
	}
	isRoot := func(s string) bool {
		if s == "root" {
			return true
		}
		n, err := strconv.ParseUint(s, 10, 32)
		return err == nil && n == 0
	}
	if isRoot(user) || (group != "" && isRoot(group)) {
		return fault.Userf("sandbox: Spec.User %q: root is not allowed in the sandbox", u)
	}
	return nil
}

// ContainerConfig converts spec into Docker's create options, applying the sandbox
// defaults (see the package documentation). It is pure: no daemon is contacted.
// An invalid spec yields a user fault (fault.Userf) naming the field.
func ContainerConfig(spec Spec) (*container.Config, *container.HostConfig, error) {
	spec, err := normalize(spec)
	if err != nil {
		return nil, nil, err
	}
	env := make([]string, 0, len(spec.Env))
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		env = append(env, k+"="+spec.Env[k])
	}
	labels := make(map[string]string, len(spec.Labels)+2)
	maps.Copy(labels, spec.Labels)
	labels[LabelRunID] = spec.RunID
	labels[LabelManaged] = "true"
	grace := graceSeconds(spec.StopGrace)

	cfg := &container.Config{
		Image:        spec.Image,
		Entrypoint:   []string{spec.Command[0]},
		Cmd:          slices.Clone(spec.Command[1:]),
		Env:          env,
		User:         spec.User,
		WorkingDir:   WorkspaceDir,
		Labels:       labels,
		AttachStdin:  false,
		AttachStdout: false,
		AttachStderr: false,
		OpenStdin:    false,
		StdinOnce:    false,
		Tty:          false,
		StopSignal:   "SIGTERM",
		StopTimeout:  &grace,
	}

	mounts := []mount.Mount{{
		Type:   mount.TypeBind,
		Source: path.Clean(spec.Workspace),
		Target: WorkspaceDir,
	}}
	for _, m := range spec.Mounts {
		mounts = append(mounts, mount.Mount{
			Type:        mount.TypeBind,
			Source:      path.Clean(m.Source),
			Target:      path.Clean(m.Target),
			ReadOnly:    true,
			BindOptions: &mount.BindOptions{NonRecursive: true},
		})
	}
	pids := spec.Limits.PidsLimit
	useInit := true
	oomKillDisable := false
	hc := &container.HostConfig{
		NetworkMode:    network.NetworkNone,
		ReadonlyRootfs: true,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges=true"},
		Privileged:     false,
		Init:           &useInit,
		IpcMode:        container.IPCModePrivate,
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		AutoRemove:     false,
		LogConfig: container.LogConfig{
			Type: logDriver,
			// Explicit options so that daemon-wide log-opts (a common max-size=10m)
			// never rotate away the beginning of the output, which Run re-reads after a
			// worker restart; the size is a disk guard for when no worker is attached
			// (an attached Run kills the container at LogBytes of raw output).
			Config: map[string]string{
				"max-size": strconv.FormatInt(logDiskBytes(spec.Limits.LogBytes), 10),
				"max-file": "1",
			},
		},
		Tmpfs: map[string]string{
			TmpDir: fmt.Sprintf("rw,exec,nosuid,nodev,size=%d,mode=1777", spec.Limits.TmpBytes),
		},
		ShmSize: spec.Limits.ShmBytes,
		Mounts:  mounts,
		Resources: container.Resources{
			Memory:         spec.Limits.MemoryBytes,
			MemorySwap:     spec.Limits.MemoryBytes,
			NanoCPUs:       spec.Limits.NanoCPUs,
			PidsLimit:      &pids,
			OomKillDisable: &oomKillDisable,
			Ulimits:        []*container.Ulimit{{Name: "core", Soft: 0, Hard: 0}},
			DeviceRequests: slices.Clone(spec.Devices),
		},
	}
	if spec.Network != "" {
		hc.NetworkMode = container.NetworkMode(spec.Network)
		// Docker's embedded DNS server (127.0.0.11 in the container) forwards names
		// it does not know to external resolvers; before the fix of CVE-2024-29018
		// (Docker 23.0.11, 25.0.5, 26.0) it does so for internal networks too, from
		// the host's network namespace when the host's resolver is on loopback: a
		// way out for data. An explicit loopback resolver is one in the container's
		// own namespace, where nothing answers. Names on the network still resolve.
		// (IPv6: Docker disables it in a container on IPv4-only networks, and
		// Firewall drops IPv6 from the bridge; a sysctl here would fail the start
		// on a host booted without IPv6.)
		hc.DNS = []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	}
	return cfg, hc, nil
}

// graceSeconds rounds d up to whole seconds (Docker's stop timeout unit), at least 1.
func graceSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

func logDiskBytes(logBytes int64) int64 {
	const maxInt64 = 1<<63 - 1
	if logBytes > maxInt64/logDiskFactor {
		return maxInt64
	}
	return max(logBytes*logDiskFactor, minLogDiskBytes)
}
