package service

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v5"

	"github.com/repro/repro/fault"
	"github.com/repro/repro/store"
	"github.com/repro/repro/verify"
)

// FieldError names one offending field.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// Problem is an RFC 9457 problem detail; every API error is one.
type Problem struct {
	Type   string       `json:"type,omitempty"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Field  string       `json:"field,omitempty"`
	Reason string       `json:"reason,omitempty"`
	Errors []FieldError `json:"errors,omitempty"`
}

func (p *Problem) Error() string {
	if p.Field != "" {
		return fmt.Sprintf("%d %s: %s: %s", p.Status, p.Title, p.Field, p.Reason)
	}
	return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail)
}

func problem(status int, detail string) *Problem {
	return &Problem{Title: http.StatusText(status), Status: status, Detail: detail}
}

// fieldProblem blames one field.
func fieldProblem(status int, field, reason string) *Problem {
	return &Problem{Title: http.StatusText(status), Status: status, Detail: field + ": " + reason, Field: field, Reason: reason,
		Errors: []FieldError{{Field: field, Reason: reason}}}
}

// fieldsProblem blames several fields; the first is the headline.
func fieldsProblem(status int, errs []FieldError) *Problem {
	p := fieldProblem(status, errs[0].Field, errs[0].Reason)
	p.Errors = errs
	if len(errs) > 1 {
		p.Detail = fmt.Sprintf("%s (and %d more)", p.Detail, len(errs)-1)
	}
	return p
}

// errorHandler answers every error as application/problem+json.
func (s *Server) errorHandler(c *echo.Context, err error) {
	if resp, uerr := echo.UnwrapResponse(c.Response()); uerr == nil && resp.Committed {
		return
	}
	p := s.toProblem(c, err)
	if p.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="repro"`)
	}
	c.Response().Header().Set("Content-Type", "application/problem+json")
	c.Response().WriteHeader(p.Status)
	if c.Request().Method != http.MethodHead {
		_ = jsonEncode(c.Response(), p)
	}
}

func (s *Server) toProblem(c *echo.Context, err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var mbe *http.MaxBytesError
	var ie *verify.InputError
	switch {
	case errors.As(err, &ie):
		return fieldProblem(http.StatusUnprocessableEntity, ie.Field, ie.Reason)
	case errors.As(err, &mbe):
		return problem(http.StatusRequestEntityTooLarge, fmt.Sprintf("the request is larger than the limit of %d bytes", mbe.Limit))
	case errors.Is(err, store.ErrNotFound):
		return problem(http.StatusNotFound, err.Error())
	case errors.Is(err, store.ErrConflict):
		return problem(http.StatusConflict, err.Error())
	case errors.Is(err, store.ErrUnauthorized):
		return problem(http.StatusUnauthorized, "missing, unknown or revoked bearer token")
	}
	if code := echo.StatusCode(err); code != 0 {
		detail := http.StatusText(code)
		if code == http.StatusNotFound {
			detail = "no such endpoint: " + c.Request().Method + " " + c.Request().URL.Path
		}
		return problem(code, detail)
	}
	if fault.IsUser(err) {
		return problem(http.StatusBadRequest, err.Error())
	}
	s.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	return problem(http.StatusInternalServerError, "internal error: "+err.Error())
}
