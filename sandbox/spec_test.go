package sandbox

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"

	"github.com/repro/repro/fault"
)

func baseSpec() Spec {
	return Spec{
		RunID:     "run-1",
		Image:     "repro-test/busybox:1",
		Command:   []string{"python", "train.py", "--seed", "1"},
		Workspace: "/srv/repro/ws/run-1",
	}
}

// assertSandbox checks the defaults every container must have, whatever the spec.
func assertSandbox(t *testing.T, spec Spec, cfg *container.Config, hc *container.HostConfig) {
	t.Helper()
	check := func(ok bool, format string, args ...any) {
		t.Helper()
		if !ok {
			t.Errorf(format, args...)
		}
	}
	// Config
	check(cfg.Image == spec.Image, "Image = %q", cfg.Image)
	check(slices.Equal(append(slices.Clone(cfg.Entrypoint), cfg.Cmd...), spec.Command), "argv = %q + %q, want %q", cfg.Entrypoint, cfg.Cmd, spec.Command)
	check(len(cfg.Entrypoint) == 1, "Entrypoint %q must be the program alone (image ENTRYPOINT overridden)", cfg.Entrypoint)
	check(len(cfg.Shell) == 0, "no shell: %q", cfg.Shell)
	check(cfg.WorkingDir == "/workspace", "WorkingDir = %q", cfg.WorkingDir)
	check(!cfg.OpenStdin && !cfg.AttachStdin && !cfg.StdinOnce, "stdin must be closed: Open=%v Attach=%v Once=%v", cfg.OpenStdin, cfg.AttachStdin, cfg.StdinOnce)
	check(!cfg.Tty, "no TTY")
	check(cfg.User != "" && cfg.User != "root" && !strings.HasPrefix(cfg.User, "0"), "User = %q must be non-root", cfg.User)
	check(cfg.Labels[LabelRunID] == spec.RunID, "label %s = %q", LabelRunID, cfg.Labels[LabelRunID])
	check(cfg.Labels[LabelManaged] == "true", "label %s = %q", LabelManaged, cfg.Labels[LabelManaged])
	check(cfg.StopSignal == "SIGTERM" && cfg.StopTimeout != nil && *cfg.StopTimeout >= 1, "StopSignal %q StopTimeout %v", cfg.StopSignal, cfg.StopTimeout)
	check(len(cfg.ExposedPorts) == 0 && len(cfg.Volumes) == 0, "no ports, no anonymous volumes")
	// HostConfig: isolation
	if spec.Network == "" {
		check(hc.NetworkMode == "none", "NetworkMode = %q", hc.NetworkMode)
		check(len(hc.DNS) == 0 && len(hc.Sysctls) == 0, "no network, yet DNS %v Sysctls %v", hc.DNS, hc.Sysctls)
	} else {
		check(string(hc.NetworkMode) == spec.Network, "NetworkMode = %q, want the agent network %q", hc.NetworkMode, spec.Network)
		check(len(hc.Sysctls) == 0, "Sysctls = %v", hc.Sysctls)
		check(len(hc.DNS) == 1 && hc.DNS[0].String() == "127.0.0.1", "agent container DNS = %v, want only the container's own loopback", hc.DNS)
	}
	check(len(hc.ExtraHosts) == 0 && len(hc.Links) == 0 && hc.PublishAllPorts == false, "no extra hosts, links or published ports")
	check(hc.ReadonlyRootfs, "root fs must be read-only")
	check(slices.Equal(hc.CapDrop, []string{"ALL"}) && len(hc.CapAdd) == 0, "CapDrop %q CapAdd %q", hc.CapDrop, hc.CapAdd)
	check(slices.Contains(hc.SecurityOpt, "no-new-privileges=true"), "SecurityOpt %q lacks no-new-privileges", hc.SecurityOpt)
	for _, o := range hc.SecurityOpt {
		check(!strings.Contains(o, "unconfined") && !strings.HasPrefix(o, "seccomp"), "SecurityOpt %q must keep the default seccomp/apparmor", o)
	}
	check(!hc.Privileged, "not privileged")
	check(hc.Init != nil && *hc.Init, "Init must be true (docker-init reaps orphans)")
	check(hc.IpcMode == "private", "IpcMode = %q", hc.IpcMode)
	check(hc.PidMode == "" && hc.UTSMode == "" && hc.UsernsMode == "" && hc.CgroupnsMode == "", "no host namespaces")
	check(hc.RestartPolicy.Name == "no" && !hc.AutoRemove, "RestartPolicy %q AutoRemove %v", hc.RestartPolicy.Name, hc.AutoRemove)
	check(len(hc.Binds) == 0 && len(hc.VolumesFrom) == 0 && len(hc.Devices) == 0 && len(hc.PortBindings) == 0, "no binds, volumes-from, devices or ports")
	check(hc.LogConfig.Type == "json-file", "LogConfig.Type = %q", hc.LogConfig.Type)
	check(hc.LogConfig.Config["max-file"] == "1" && hc.LogConfig.Config["max-size"] != "", "LogConfig.Config = %v", hc.LogConfig.Config)
	// HostConfig: filesystems
	tmp := hc.Tmpfs["/tmp"]
	check(len(hc.Tmpfs) == 1, "Tmpfs = %v", hc.Tmpfs)
	for _, o := range []string{"rw", "exec", "nosuid", "nodev", "mode=1777", fmt.Sprintf("size=%d", spec.Limits.TmpBytes)} {
		check(slices.Contains(strings.Split(tmp, ","), o), "tmpfs /tmp options %q lack %q", tmp, o)
	}
	check(len(hc.Mounts) == 1+len(spec.Mounts), "Mounts = %+v", hc.Mounts)
	if len(hc.Mounts) > 0 {
		ws := hc.Mounts[0]
		check(ws.Type == mount.TypeBind && ws.Source == spec.Workspace && ws.Target == "/workspace" && !ws.ReadOnly, "workspace mount %+v", ws)
	}
	for i, m := range spec.Mounts {
		if 1+i >= len(hc.Mounts) {
			break
		}
		got := hc.Mounts[1+i]
		check(got.Type == mount.TypeBind && got.Source == m.Source && got.Target == m.Target && got.ReadOnly, "mount %d = %+v, want read-only bind of %+v", i, got, m)
		check(got.BindOptions != nil && got.BindOptions.NonRecursive, "mount %d must be non-recursive (no writable submounts)", i)
	}
	for _, m := range hc.Mounts {
		check(!strings.Contains(m.Source, "docker.sock"), "docker socket mounted: %+v", m)
	}
	// HostConfig: resources
	r := hc.Resources
	check(r.Memory == spec.Limits.MemoryBytes && r.MemorySwap == r.Memory, "Memory %d MemorySwap %d, want %d both", r.Memory, r.MemorySwap, spec.Limits.MemoryBytes)
	check(r.NanoCPUs == spec.Limits.NanoCPUs, "NanoCPUs = %d", r.NanoCPUs)
	check(r.PidsLimit != nil && *r.PidsLimit == spec.Limits.PidsLimit, "PidsLimit = %v", r.PidsLimit)
	check(r.OomKillDisable == nil || !*r.OomKillDisable, "OOM killer must stay enabled")
	check(hc.ShmSize == spec.Limits.ShmBytes, "ShmSize = %d", hc.ShmSize)
	check(len(r.Ulimits) == 1 && r.Ulimits[0].Name == "core" && r.Ulimits[0].Hard == 0, "Ulimits = %v", r.Ulimits)
}

func TestContainerConfig(t *testing.T) {
	defaults := Limits{
		MemoryBytes: DefaultMemoryBytes, NanoCPUs: DefaultNanoCPUs, PidsLimit: DefaultPidsLimit,
		TmpBytes: DefaultTmpBytes, ShmBytes: DefaultShmBytes, LogBytes: DefaultLogBytes,
	}
	tests := []struct {
		name   string
		mutate func(*Spec)
		// want is the spec ContainerConfig must realise (defaults filled in).
		want  func(*Spec)
		extra func(t *testing.T, cfg *container.Config, hc *container.HostConfig)
	}{
		{
			name:   "zero limits get documented defaults",
			mutate: func(s *Spec) {},
			want:   func(s *Spec) { s.Limits = defaults; s.User = DefaultUser },
			extra: func(t *testing.T, cfg *container.Config, hc *container.HostConfig) {
				if cfg.User != "65534:65534" {
					t.Errorf("default User = %q", cfg.User)
				}
				if *cfg.StopTimeout != 10 {
					t.Errorf("default StopTimeout = %d", *cfg.StopTimeout)
				}
				if hc.LogConfig.Config["max-size"] != fmt.Sprint(int64(DefaultLogBytes)*logDiskFactor) {
					t.Errorf("max-size = %s", hc.LogConfig.Config["max-size"])
				}
			},
		},
		{
			name: "limits pass through",
			mutate: func(s *Spec) {
				s.Limits = Limits{MemoryBytes: 64 << 30, NanoCPUs: 8e9, PidsLimit: 4096, TmpBytes: 10 << 30, ShmBytes: 32 << 30, LogBytes: 1 << 20}
				s.StopGrace = 1500 * time.Millisecond
			},
			want: func(s *Spec) { s.User = DefaultUser },
			extra: func(t *testing.T, cfg *container.Config, hc *container.HostConfig) {
				if *cfg.StopTimeout != 2 {
					t.Errorf("StopTimeout = %d, want 1.5s rounded up to 2", *cfg.StopTimeout)
				}
				if hc.LogConfig.Config["max-size"] != fmt.Sprint(minLogDiskBytes) {
					t.Errorf("max-size = %s, want the floor", hc.LogConfig.Config["max-size"])
				}
			},
		},
		{
			name: "env sorted, labels merged, user kept, mounts read-only",
			mutate: func(s *Spec) {
				s.Env = map[string]string{"SEED": "1", "A": "x=y", "EMPTY": ""}
				s.Labels = map[string]string{"repro.env": "pytorch-2.5"}
				s.User = "1000:1000"
				s.Mounts = []Mount{{Source: "/data/fineweb", Target: "/data"}, {Source: "/srv/tok", Target: "/workspace/tok"}}
				s.Limits = defaults
			},
			extra: func(t *testing.T, cfg *container.Config, hc *container.HostConfig) {
				if want := []string{"A=x=y", "EMPTY=", "SEED=1"}; !slices.Equal(cfg.Env, want) {
					t.Errorf("Env = %q, want %q", cfg.Env, want)
				}
				if cfg.Labels["repro.env"] != "pytorch-2.5" || len(cfg.Labels) != 3 {
					t.Errorf("Labels = %v", cfg.Labels)
				}
				if cfg.User != "1000:1000" {
					t.Errorf("User = %q", cfg.User)
				}
			},
		},
		{
			name:   "single-word command",
			mutate: func(s *Spec) { s.Command = []string{"true"} },
			want:   func(s *Spec) { s.Limits = defaults; s.User = DefaultUser },
			extra: func(t *testing.T, cfg *container.Config, hc *container.HostConfig) {
				if !slices.Equal(cfg.Entrypoint, []string{"true"}) || len(cfg.Cmd) != 0 {
					t.Errorf("Entrypoint %q Cmd %q", cfg.Entrypoint, cfg.Cmd)
				}
			},
		},
		{
			name:   "agent network joined, every other default kept",
			mutate: func(s *Spec) { s.Network = "repro-agents-0a1b2c3d" },
			want:   func(s *Spec) { s.Limits = defaults; s.User = DefaultUser },
			extra: func(t *testing.T, cfg *container.Config, hc *container.HostConfig) {
				if hc.NetworkMode.IsNone() || hc.NetworkMode.IsHost() || hc.NetworkMode.IsDefault() || hc.NetworkMode.IsBridge() || !hc.NetworkMode.IsUserDefined() {
					t.Errorf("NetworkMode %q must be the user-defined agent network", hc.NetworkMode)
				}
			},
		},
		{
			name:   "agent network with dots, dashes and underscores",
			mutate: func(s *Spec) { s.Network = "a.b_c-d" },
			want:   func(s *Spec) { s.Limits = defaults; s.User = DefaultUser },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec()
			tt.mutate(&spec)
			want := spec
			if tt.want != nil {
				tt.want(&want)
			}
			cfg, hc, err := ContainerConfig(spec)
			if err != nil {
				t.Fatal(err)
			}
			assertSandbox(t, want, cfg, hc)
			if tt.extra != nil {
				tt.extra(t, cfg, hc)
			}
		})
	}
}

func TestContainerConfigPure(t *testing.T) {
	spec := baseSpec()
	spec.Env = map[string]string{"B": "2", "A": "1"}
	cfg1, hc1, err1 := ContainerConfig(spec)
	cfg2, hc2, err2 := ContainerConfig(spec)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if fmt.Sprintf("%+v%+v", *cfg1, *hc1) == "" || !slices.Equal(cfg1.Env, cfg2.Env) || hc1.Tmpfs["/tmp"] != hc2.Tmpfs["/tmp"] {
		t.Fatal("ContainerConfig is not deterministic")
	}
	cfg1.Cmd[0] = "mutated"
	if spec.Command[1] != "train.py" {
		t.Fatal("ContainerConfig aliases spec.Command")
	}
}

func TestContainerConfigInvalid(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Spec)
		field  string // must be named in the error
	}{
		{"empty run id", func(s *Spec) { s.RunID = "" }, "RunID"},
		{"run id with slash", func(s *Spec) { s.RunID = "a/b" }, "RunID"},
		{"run id with space", func(s *Spec) { s.RunID = "a b" }, "RunID"},
		{"run id leading dash", func(s *Spec) { s.RunID = "-a" }, "RunID"},
		{"run id too long", func(s *Spec) { s.RunID = strings.Repeat("a", 129) }, "RunID"},
		{"empty image", func(s *Spec) { s.Image = "" }, "Image"},
		{"image with space", func(s *Spec) { s.Image = "a b" }, "Image"},
		{"empty command", func(s *Spec) { s.Command = nil }, "Command"},
		{"empty program", func(s *Spec) { s.Command = []string{"", "x"} }, "Command"},
		{"NUL in argument", func(s *Spec) { s.Command = []string{"a", "b\x00"} }, "Command[1]"},
		{"env name with =", func(s *Spec) { s.Env = map[string]string{"A=B": "1"} }, "Env"},
		{"empty env name", func(s *Spec) { s.Env = map[string]string{"": "1"} }, "Env"},
		{"relative workspace", func(s *Spec) { s.Workspace = "ws" }, "Workspace"},
		{"empty workspace", func(s *Spec) { s.Workspace = "" }, "Workspace"},
		{"workspace is host root", func(s *Spec) { s.Workspace = "/" }, "Workspace"},
		{"relative mount source", func(s *Spec) { s.Mounts = []Mount{{Source: "data", Target: "/data"}} }, "Mounts[0].Source"},
		{"docker socket", func(s *Spec) { s.Mounts = []Mount{{Source: "/var/run/docker.sock", Target: "/s"}} }, "Mounts[0].Source"},
		{"dir above docker socket", func(s *Spec) { s.Mounts = []Mount{{Source: "/var/run/", Target: "/s"}} }, "Mounts[0].Source"},
		{"relative mount target", func(s *Spec) { s.Mounts = []Mount{{Source: "/d", Target: "data"}} }, "Mounts[0].Target"},
		{"mount over workspace", func(s *Spec) { s.Mounts = []Mount{{Source: "/d", Target: "/workspace/"}} }, "Mounts[0].Target"},
		{"mount over root", func(s *Spec) { s.Mounts = []Mount{{Source: "/d", Target: "/"}} }, "Mounts[0].Target"},
		{"mount over tmp", func(s *Spec) { s.Mounts = []Mount{{Source: "/d", Target: "/tmp"}} }, "Mounts[0].Target"},
		{"mount under proc", func(s *Spec) { s.Mounts = []Mount{{Source: "/d", Target: "/proc/x"}} }, "Mounts[0].Target"},
		{"mount twice", func(s *Spec) { s.Mounts = []Mount{{Source: "/d", Target: "/data"}, {Source: "/e", Target: "/data/"}} }, "Mounts[1].Target"},
		{"negative timeout", func(s *Spec) { s.Timeout = -time.Second }, "Timeout"},
		{"negative grace", func(s *Spec) { s.StopGrace = -time.Second }, "StopGrace"},
		{"root user", func(s *Spec) { s.User = "root" }, "User"},
		{"uid 0", func(s *Spec) { s.User = "0" }, "User"},
		{"uid 0 with group", func(s *Spec) { s.User = "0:1000" }, "User"},
		{"root group", func(s *Spec) { s.User = "1000:0" }, "User"},
		{"empty user name", func(s *Spec) { s.User = ":1000" }, "User"},
		{"reserved label", func(s *Spec) { s.Labels = map[string]string{LabelRunID: "other"} }, "Labels"},
		{"negative memory", func(s *Spec) { s.Limits.MemoryBytes = -1 }, "Limits.MemoryBytes"},
		{"tiny memory", func(s *Spec) { s.Limits.MemoryBytes = 1 << 20 }, "Limits.MemoryBytes"},
		{"negative cpus", func(s *Spec) { s.Limits.NanoCPUs = -1 }, "Limits.NanoCPUs"},
		{"negative pids", func(s *Spec) { s.Limits.PidsLimit = -1 }, "Limits.PidsLimit"},
		{"negative tmp", func(s *Spec) { s.Limits.TmpBytes = -1 }, "Limits.TmpBytes"},
		{"negative shm", func(s *Spec) { s.Limits.ShmBytes = -1 }, "Limits.ShmBytes"},
		{"negative log", func(s *Spec) { s.Limits.LogBytes = -1 }, "Limits.LogBytes"},
		{"host network", func(s *Spec) { s.Network = "host" }, "Network"},
		{"host network, other case", func(s *Spec) { s.Network = "HOST" }, "Network"},
		{"default bridge network", func(s *Spec) { s.Network = "bridge" }, "Network"},
		{"default network", func(s *Spec) { s.Network = "default" }, "Network"},
		{"network none spelled out", func(s *Spec) { s.Network = "none" }, "Network"},
		{"another container's network", func(s *Spec) { s.Network = "container:abc" }, "Network"},
		{"network with slash", func(s *Spec) { s.Network = "a/b" }, "Network"},
		{"network with space", func(s *Spec) { s.Network = "a b" }, "Network"},
		{"network leading dash", func(s *Spec) { s.Network = "-net" }, "Network"},
		{"network too long", func(s *Spec) { s.Network = strings.Repeat("n", 129) }, "Network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec()
			tt.mutate(&spec)
			cfg, hc, err := ContainerConfig(spec)
			if err == nil {
				t.Fatalf("no error; config %+v %+v", cfg, hc)
			}
			if !fault.IsUser(err) {
				t.Errorf("error %v is %v, want a user fault", err, fault.Of(err))
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
		})
	}
}

func TestContainerConfigPassesGPUDeviceRequests(t *testing.T) {
	req := container.DeviceRequest{Driver: "nvidia", DeviceIDs: []string{"GPU-a", "GPU-b"}, Capabilities: [][]string{{"gpu", "compute", "utility"}}}
	_, hc, err := ContainerConfig(Spec{RunID: "gpu-run", Image: "img", Command: []string{"true"}, Workspace: "/tmp/ws", Devices: []container.DeviceRequest{req}})
	if err != nil {
		t.Fatal(err)
	}
	if len(hc.DeviceRequests) != 1 || hc.DeviceRequests[0].Driver != "nvidia" || !slices.Equal(hc.DeviceRequests[0].DeviceIDs, req.DeviceIDs) {
		t.Fatalf("device requests = %+v", hc.DeviceRequests)
	}
	_, hc, _ = ContainerConfig(Spec{RunID: "cpu-run", Image: "img", Command: []string{"true"}, Workspace: "/tmp/ws"})
	if len(hc.DeviceRequests) != 0 {
		t.Fatalf("a CPU run got device requests %+v", hc.DeviceRequests)
	}
}
