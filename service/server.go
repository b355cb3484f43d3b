// Package service is repro's HTTP API: the handlers of openapi.yaml (echo v5),
// bearer-token auth, request validation against the contract, SSE log streaming
// and errors as application/problem+json. It never talks to Docker: it writes runs
// into the store's queue and reads results from the store and the archive.
package service

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v5"
	"github.com/labstack/echo/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/images"
	"github.com/repro/repro/openapi"
	"github.com/repro/repro/sandbox/gpu"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
	"github.com/repro/repro/verify"
)

// Pinger is anything /readyz checks (the Docker engine, for one).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Config configures the API.
type Config struct {
	DataDir        string
	AdminToken     string                  // "" disables the admin token
	Environments   map[string]string       // name → image
	MaxUploadBytes int64                   // a larger submission answers 413 (default 512 MiB)
	GPUCheck       func(gpu.Request) error // refuses GPU requests no worker could ever satisfy (nil: no check)
	Docker         Pinger                  // nil: not checked by /readyz
	Version        string
	Tasks          *tasks.Catalog  // the task catalogue (nil: none)
	TaskStore      string          // where synced task files are (tasks.Sync's store)
	RefsDir        string          // calibrated reference times (tasks.Calibrate's dir)
	TaskOverrides  bool            // let task runs name their own environment, command, limits
	EnvCatalog     *images.Catalog // the pinned environment catalogue (nil: none)
	EnvBuilder     EnvBuilder      // builds catalogue environments (nil: no builds over the API)
	Campaigns      *verify.Service // verifications, audits, agent runs (nil: refused with 503)
	Agents         bool            // agent containers have their network and listener
	LLMEndpoints   []string        // names of the LLM gateway's endpoints
}

// Server is the API.
type Server struct {
	cfg     Config
	store   *store.Store
	archive archive.Store
	log     *slog.Logger
	echo    *echo.Echo
	valid   *validator
	metrics *prometheus.Registry
	reqs    *prometheus.CounterVec
}

// New builds the API.
func New(cfg Config, st *store.Store, ar archive.Store, log *slog.Logger) (*Server, error) {
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = 512 << 20
	}
	if log == nil {
		log = slog.Default()
	}
	v, err := newValidator()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: st, archive: ar, log: log, valid: v}
	s.initMetrics()
	e := echo.New()
	e.HTTPErrorHandler = s.errorHandler
	e.Use(middleware.Recover())
	e.Use(s.observe)
	e.Use(s.authenticate)
	e.Use(v.middleware)
	openapi.RegisterHandlers(e, s)
	s.registerPages(e)
	// Bundle paths contain slashes: a wildcard route beside the generated one.
	e.GET("/v1/runs/:id/files/*", func(c *echo.Context) error {
		id, err := parseRunID(c.Param("id"))
		if err != nil {
			return err
		}
		return s.GetRunFile(c, id, c.Param("*"))
	})
	s.echo = e
	return s, nil
}

// Handler is the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.echo }

// principal is who made a request.
type principal struct {
	admin bool
	team  store.Team
}

const principalKey = "repro.principal"

func who(c *echo.Context) principal {
	p, _ := c.Get(principalKey).(principal)
	return p
}

// authenticate requires a bearer token on /v1: the admin token or a team's token.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		if !strings.HasPrefix(c.Request().URL.Path, "/v1/") {
			return next(c)
		}
		auth := c.Request().Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if m := c.Request().Method; auth == "" && (m == http.MethodGet || m == http.MethodHead) {
			// The pages' links (bundle files, reports) carry the login cookie instead:
			// only for reads (it is SameSite=Strict besides).
			if ck, err := c.Request().Cookie(tokenCookie); err == nil {
				token, ok = ck.Value, true
			}
		}
		token = strings.TrimSpace(token)
		if !ok || token == "" {
			return fieldProblem(http.StatusUnauthorized, "Authorization", "a bearer token is required (Authorization: Bearer <token>)")
		}
		p, err := s.principalOf(c.Request().Context(), token)
		if err != nil {
			return err
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

// principalOf resolves a token: the admin token, or a team's (else ErrUnauthorized).
func (s *Server) principalOf(ctx context.Context, token string) (principal, error) {
	if s.cfg.AdminToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.AdminToken)) == 1 {
		return principal{admin: true}, nil
	}
	team, err := s.store.Authenticate(ctx, token)
	if err != nil {
		return principal{}, err
	}
	return principal{team: team}, nil
}

func requireAdmin(c *echo.Context) error {
	if !who(c).admin {
		return problem(http.StatusForbidden, "this needs the admin token")
	}
	return nil
}

// observe logs each request and counts it for /metrics.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			s.errorHandler(c, err)
		}
		status := 0
		if resp, uerr := echo.UnwrapResponse(c.Response()); uerr == nil {
			status = resp.Status
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		s.reqs.WithLabelValues(c.Request().Method, route, http.StatusText(status)).Inc()
		s.log.Debug("request", "method", c.Request().Method, "path", c.Request().URL.Path, "status", status, "took", time.Since(start))
		return nil
	}
}

func jsonEncode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
