package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/client"
	"github.com/riverqueue/river"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/images"
	"github.com/repro/repro/sandbox"
	"github.com/repro/repro/sandbox/gpu"
	"github.com/repro/repro/service"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
	"github.com/repro/repro/verify"
	"github.com/repro/repro/worker"
)

type serveConfig struct {
	addr           string
	dataDir        string
	s3Endpoint     string
	s3AccessKey    string
	s3SecretKey    string
	s3Bucket       string
	s3Retention    int
	s3SealedRet    int
	environments   listFlag
	adminToken     string
	concurrency    int
	maxUpload      byteSize
	memory         byteSize
	cpus           float64
	pids           int64
	tmpSize        byteSize
	workspaceSize  byteSize
	imageWatermark byteSize
	shmSize        byteSize
	logLimit       byteSize
	stopGrace      time.Duration
	logLevel       string
	containerUser  string
	workerHostname string
	reapEvery      time.Duration
	profile        string
	taskOverrides  bool
	agents         bool
	agentPort      int
	agentConc      int
	llmEndpoints   string
}

func defaultDataDir() string {
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "repro")
	}
	return "repro-data"
}

func serveFlags(name string) (*flag.FlagSet, *serveConfig) {
	c := &serveConfig{maxUpload: 512 << 20, memory: 4 << 30, tmpSize: 1 << 30, shmSize: 1 << 30, logLimit: 4 << 30}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address the API listens on")
	fs.StringVar(&c.dataDir, "data-dir", defaultDataDir(), "state database, run workspaces and (without S3) the archive")
	fs.StringVar(&c.s3Endpoint, "s3-endpoint", "", "S3/MinIO endpoint (host:port, or http:// / https:// URL); empty: archive under the data dir")
	fs.StringVar(&c.s3AccessKey, "s3-access-key", "", "S3 access key")
	fs.StringVar(&c.s3SecretKey, "s3-secret-key", "", "S3 secret key")
	fs.StringVar(&c.s3Bucket, "s3-bucket", "repro", "S3 bucket (created with versioning and object locking)")
	fs.IntVar(&c.s3Retention, "s3-retention-days", 0, "object-lock retention (GOVERNANCE) of archived objects, in days; 0: none")
	fs.IntVar(&c.s3SealedRet, "s3-sealed-retention-days", 3650, "object-lock retention (GOVERNANCE) of the evidence written once (run manifests, verification, audit and agent reports), in days, when the bucket has object lock; 0: as --s3-retention-days")
	fs.Var(&c.environments, "environment", "NAME=IMAGE, an environment runs may use (repeatable; env: comma-separated)")
	fs.StringVar(&c.adminToken, "admin-token", "", "a bearer token with admin rights (bootstrap: create teams and tokens)")
	fs.IntVar(&c.concurrency, "concurrency", 1, "runs executed at once by this worker")
	fs.Var(&c.maxUpload, "max-upload", "largest accepted submission (e.g. 512MiB)")
	fs.Var(&c.memory, "memory", "memory limit per run (swap off)")
	fs.Float64Var(&c.cpus, "cpus", 0, "CPUs per run (0: no limit)")
	fs.Int64Var(&c.pids, "pids", 1024, "process limit per run")
	fs.Var(&c.tmpSize, "tmp-size", "size of each run's /tmp")
	fs.Var(&c.workspaceSize, "workspace-size", "disk quota of each run's /workspace (a loop-mounted ext4 image, reserved up front; needs root and loop devices); 0: uncapped (default: 10GiB as root, else uncapped)")
	fs.Var(&c.shmSize, "shm-size", "size of each run's /dev/shm")
	fs.Var(&c.imageWatermark, "image-watermark", "above this much image disk use, unused environment images are removed (least recently used first; they stay in the archive); 0: never")
	fs.Var(&c.logLimit, "log-limit", "output kept per run; a run printing more is stopped and failed")
	fs.DurationVar(&c.stopGrace, "stop-grace", 10*time.Second, "time between SIGTERM and SIGKILL when a run is stopped")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.containerUser, "container-user", "65534:65534", "uid:gid runs execute as")
	fs.StringVar(&c.workerHostname, "worker-name", "", "this worker's name (default: the host name)")
	fs.DurationVar(&c.reapEvery, "reap-every", time.Minute, "how often leftover containers and files of ended runs are removed")
	fs.StringVar(&c.profile, "hardware-profile", "", "this worker's hardware profile for scoring (default: from its GPUs and CPUs, e.g. 8xh100 or cpu-2core)")
	fs.BoolVar(&c.taskOverrides, "task-overrides", false, "let task runs name their own environment, command, limits and task variables")
	fs.BoolVar(&c.agents, "agents", true, "run agent runs: an internal Docker network whose only reachable address is repro's agent listener (firewalled with iptables: needs root)")
	fs.IntVar(&c.agentPort, "agent-port", 7071, "port of the agent listener on the agent network's gateway (fixed, so that agents still running find it after a restart)")
	fs.IntVar(&c.agentConc, "agent-concurrency", 4, "agent containers run at once (they do not take --concurrency's run slots)")
	fs.StringVar(&c.llmEndpoints, "llm-endpoints", "", "JSON file of the LLM gateway's endpoints: [{name, base_url, api_key_env, models, prompt_price_per_mtok, completion_price_per_mtok}]")
	describeEnv(fs)
	return fs, c
}

func parseEnvironments(items []string) (map[string]string, error) {
	envs := map[string]string{}
	for _, item := range items {
		name, image, ok := strings.Cut(item, "=")
		if !ok || name == "" || image == "" {
			return nil, usageError{fmt.Sprintf("--environment %q: want NAME=IMAGE", item)}
		}
		if _, dup := envs[name]; dup {
			return nil, usageError{fmt.Sprintf("--environment %q: %s given twice", item, name)}
		}
		envs[name] = image
	}
	return envs, nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: %v", level, err)}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	slog.SetDefault(log)
	return log, nil
}

// openArchive opens MinIO/S3 when an endpoint is configured, else a directory archive.
func openArchive(ctx context.Context, c *serveConfig) (archive.Store, string, error) {
	if c.s3Endpoint == "" {
		dir := filepath.Join(c.dataDir, "archive")
		st, err := archive.NewLocal(dir)
		return st, "file://" + dir, err
	}
	endpoint, secure := c.s3Endpoint, true
	switch {
	case strings.HasPrefix(endpoint, "http://"):
		endpoint, secure = strings.TrimPrefix(endpoint, "http://"), false
	case strings.HasPrefix(endpoint, "https://"):
		endpoint = strings.TrimPrefix(endpoint, "https://")
	default:
		host, _, err := net.SplitHostPort(endpoint)
		if err != nil {
			host = endpoint
		}
		ip := net.ParseIP(host)
		secure = !(host == "localhost" || (ip != nil && ip.IsLoopback()))
	}
	st, err := archive.NewS3(ctx, archive.S3Config{
		Endpoint: endpoint, AccessKey: c.s3AccessKey, SecretKey: c.s3SecretKey, Bucket: c.s3Bucket,
		Secure: secure, RetentionDays: c.s3Retention, SealedRetentionDays: c.s3SealedRet,
	})
	return st, "s3://" + c.s3Bucket, err
}

// flagSet reports whether a flag was given on the command line or by its REPRO_* twin.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// instanceID is this deployment's ID, made once and kept in the data dir: containers
// carry it, so a reaper never touches another deployment's containers on a shared engine.
func instanceID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "instance-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	id := uuid.NewString()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	return id, nil
}

// envBuilder builds catalogue environments for the API, strictly.
type envBuilder struct {
	cat *images.Catalog
	b   *images.Builder
}

func (e envBuilder) Build(ctx context.Context, name string, progress io.Writer) (string, string, error) {
	env, err := e.cat.Lookup(name)
	if err != nil {
		return "", "", err
	}
	res, err := e.b.Build(ctx, env, progress, true)
	return res.Tag, res.ImageID, err
}

// syncBuiltinTasks puts the files of the built-in task suites (the CPU tasks) into the
// task store, so their bundles can be handed out without any network.
func syncBuiltinTasks(ctx context.Context, cat *tasks.Catalog, dir string) error {
	var ids []string
	for _, t := range cat.Tasks {
		if t.Start() != nil && t.Start().Script.Repo == tasks.BuiltinRepo {
			ids = append(ids, t.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	builtin, err := cat.Select(ids...)
	if err != nil {
		return err
	}
	if err := tasks.Sync(ctx, builtin, dir, tasks.HTTPSource{}, io.Discard); err != nil {
		return fmt.Errorf("built-in tasks: %w", err)
	}
	return nil
}

// defaultProfile names a worker's hardware profile from what it has: "8xh100" for
// eight H100s, "cpu-2core" for two cores and no GPU.
func defaultProfile(inv gpu.Inventory) string {
	if len(inv.Devices) == 0 {
		return fmt.Sprintf("cpu-%dcore", runtime.NumCPU())
	}
	model := strings.ToLower(inv.Devices[0].Model)
	for _, known := range []string{"h100", "h200", "b200", "a100"} {
		if strings.Contains(model, known) {
			model = known
			break
		}
	}
	return fmt.Sprintf("%dx%s", len(inv.Devices), strings.ReplaceAll(model, " ", "-"))
}

// serve runs the API and an in-process worker (withAPI) or a worker alone.
func serve(ctx context.Context, args []string, withAPI bool) error {
	name := "serve"
	if !withAPI {
		name = "worker"
	}
	fs, c := serveFlags(name)
	if err := parseWithEnv(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s takes no arguments (got %q)", name, fs.Args())}
	}
	log, err := newLogger(c.logLevel)
	if err != nil {
		return err
	}
	if !flagSet(fs, "workspace-size") {
		if os.Geteuid() == 0 {
			c.workspaceSize = 10 << 30
		} else {
			log.Warn("run workspaces are uncapped: a disk quota (--workspace-size) needs root for its loop mount")
		}
	}
	envs, err := parseEnvironments(c.environments)
	if err != nil {
		return err
	}
	docker, err := sandbox.NewDocker(ctx)
	if err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	defer docker.Close()
	if err := docker.Ping(ctx); err != nil {
		return fmt.Errorf("docker engine unreachable (is dockerd running?): %w", err)
	}
	ar, where, err := openArchive(ctx, c)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	catalog, err := tasks.LoadCatalog()
	if err != nil {
		return fmt.Errorf("task catalogue: %w", err)
	}
	taskStore := filepath.Join(c.dataDir, "taskfiles")
	if err := syncBuiltinTasks(ctx, catalog, taskStore); err != nil {
		return err
	}
	node, err := gpu.OpenSystem(ctx, log)
	if err != nil {
		return fmt.Errorf("GPUs: %w", err)
	}
	defer node.Close()
	inv := node.Inventory()
	if c.profile == "" {
		c.profile = defaultProfile(inv)
	}
	alloc := gpu.NewAllocator(inv)
	envCatalog, err := images.Default()
	if err != nil {
		return fmt.Errorf("environment catalogue: %w", err)
	}
	imgClient, err := client.New(client.FromEnv)
	if err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	defer imgClient.Close()
	builder := images.NewBuilder(imgClient)
	builder.LogDir = filepath.Join(c.dataDir, "builds")
	// Runs may name a catalogue environment or one registered by flag (the flag wins).
	allEnvs := map[string]string{}
	for _, e := range envCatalog.List() {
		if tag, err := e.Tag(); err == nil {
			allEnvs[e.Name] = tag
		}
	}
	for name, img := range envs {
		allEnvs[name] = img
	}
	workers := river.NewWorkers()
	llmEndpoints, err := loadLLMEndpoints(c.llmEndpoints)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, store.Options{DataDir: c.dataDir, Workers: workers, Concurrency: c.concurrency,
		AgentConcurrency: c.agentConc, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close(context.WithoutCancel(ctx))
	instance, err := instanceID(c.dataDir)
	if err != nil {
		return err
	}
	var agents *agentListener
	var agentsWorker *worker.Agents
	if c.agents {
		if agents, err = startAgentNetwork(ctx, docker, instance, c.agentPort); err != nil {
			log.Warn("agent runs are disabled", "err", err)
			agents = nil
		} else {
			agentsWorker = agents.workerConfig()
			defer agents.close(context.WithoutCancel(ctx), docker, log)
		}
	}
	exec := worker.New(worker.Config{
		DataDir:      c.dataDir,
		Instance:     instance,
		Environments: envs,
		Limits: sandbox.Limits{
			MemoryBytes: int64(c.memory), NanoCPUs: int64(c.cpus * 1e9), PidsLimit: c.pids,
			TmpBytes: int64(c.tmpSize), WorkspaceBytes: int64(c.workspaceSize), ShmBytes: int64(c.shmSize), LogBytes: int64(c.logLimit),
		},
		StopGrace: c.stopGrace,
		User:      c.containerUser,
		Host:      c.workerHostname,
		Version:   reproVersion(),
		Tasks:     catalog,
		RefsDir:   filepath.Join(c.dataDir, "refs"),
		Profile:   c.profile,
		Images:    &worker.Images{Catalog: envCatalog, Builder: builder, Client: imgClient, Watermark: int64(c.imageWatermark)},
		GPUs:      &worker.GPUs{Node: node, Allocator: alloc},
		Agents:    agentsWorker,
	}, st, docker, ar, log)
	var api *service.Server
	var campaigns *verify.Service
	if withAPI {
		campaigns = verify.New(verify.Config{
			DataDir: c.dataDir, Tasks: catalog, TaskStore: taskStore, Profile: c.profile, Version: reproVersion(),
			GPUCheck: alloc.Check,
		}, st, ar, log)
		api, err = service.New(service.Config{
			DataDir: c.dataDir, AdminToken: c.adminToken, Environments: allEnvs,
			MaxUploadBytes: int64(c.maxUpload), Docker: docker, Version: reproVersion(),
			GPUCheck: alloc.Check, Tasks: catalog, TaskStore: taskStore,
			RefsDir: filepath.Join(c.dataDir, "refs"), TaskOverrides: c.taskOverrides,
			EnvCatalog: envCatalog, EnvBuilder: envBuilder{envCatalog, builder}, Campaigns: campaigns,
			Agents: agents != nil, LLMEndpoints: endpointNames(llmEndpoints),
		}, st, ar, log)
		if err != nil {
			return err
		}
		if agents != nil {
			gw, err := newGateway(st, c.dataDir, llmEndpoints, log)
			if err != nil {
				return fmt.Errorf("LLM gateway: %w", err)
			}
			var llm http.Handler
			if gw != nil {
				llm = gw
			}
			go agents.serve(ctx, api.AgentHandler(llm), log)
			log.Info("agent listener", "url", agents.url(), "network", agents.net.Name, "llm_endpoints", endpointNames(llmEndpoints))
		}
	}
	defer exec.Wait() // runs before st.Close: recovery goroutines finish first
	river.AddWorker(workers, &worker.RunWorker{Exec: exec})
	if err := exec.Recover(ctx); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	if err := st.Start(ctx); err != nil {
		return err
	}
	if campaigns != nil {
		defer campaigns.Wait()
		if err := campaigns.Start(ctx); err != nil {
			return fmt.Errorf("resuming verifications and audits: %w", err)
		}
	}
	go exec.ReapLoop(ctx, c.reapEvery)
	log.Info("repro started", "version", reproVersion(), "data_dir", c.dataDir, "archive", where, "environments", len(envs),
		"concurrency", c.concurrency, "gpus", inv.String(), "hardware_profile", c.profile)
	if !withAPI {
		<-ctx.Done()
		log.Info("worker stopping; running containers keep running and are re-attached at the next start")
		return nil
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.addr, err)
	}
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("API listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down; running containers keep running and are re-attached at the next start")
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shut); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
