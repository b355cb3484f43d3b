package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/repro/repro/fault"
)

// DefaultBaseURL serves a GitHub repository's file at a commit as
// BASE/OWNER/NAME/COMMIT/PATH.
const DefaultBaseURL = "https://raw.githubusercontent.com"

// maxPinnedFile bounds how much of one pinned file is ever read.
const maxPinnedFile = 64 << 20

// Errors a caller may test with errors.Is.
var (
	// ErrHashMismatch: a file's content does not have its pinned sha256 (or size).
	ErrHashMismatch = errors.New("sha256 mismatch")
	// ErrMissing: a source does not have a pinned file.
	ErrMissing = errors.New("file missing")
	// ErrNotSynced: a pinned file is not in the store (run Sync first).
	ErrNotSynced = errors.New("file not synced")
)

// Source fetches pinned files by repository, commit and path.
type Source interface {
	// Open returns f's content as the source has it (unverified). A file the
	// source does not have is an error wrapping ErrMissing.
	Open(ctx context.Context, f File) (io.ReadCloser, error)
	// String describes the source in progress lines.
	String() string
}

// HTTPSource fetches files over HTTP from BaseURL/OWNER/NAME/COMMIT/PATH,
// the layout of raw.githubusercontent.com (DefaultBaseURL, used when BaseURL
// is empty). Transient failures (network errors, 5xx, 429) are retried a few
// times; a 404 is ErrMissing at once.
type HTTPSource struct {
	BaseURL string
	Client  *http.Client // nil: a client with a 2-minute timeout
}

// URL returns the address HTTPSource fetches f from.
func (s HTTPSource) URL(f File) string {
	base := s.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	parts := append(strings.Split(f.Repo, "/"), f.Commit)
	parts = append(parts, strings.Split(f.Path, "/")...)
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.TrimRight(base, "/") + "/" + strings.Join(parts, "/")
}

func (s HTTPSource) String() string {
	if s.BaseURL == "" {
		return DefaultBaseURL
	}
	return s.BaseURL
}

// Open fetches f.
func (s HTTPSource) Open(ctx context.Context, f File) (io.ReadCloser, error) {
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Minute}
	}
	u := s.URL(f)
	var last error
	for attempt := 0; attempt < 4; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(250<<attempt) * time.Millisecond):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			last = err
			continue
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			return resp.Body, nil
		case resp.StatusCode == http.StatusNotFound:
			resp.Body.Close()
			return nil, fmt.Errorf("%w: GET %s: %s", ErrMissing, u, resp.Status)
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			resp.Body.Close()
			last = fmt.Errorf("GET %s: %s", u, resp.Status)
		default:
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
		}
	}
	return nil, last
}

// MirrorSource reads files from a local mirror directory laid out as
// DIR/OWNER/NAME/COMMIT/PATH, e.g.
//
//	DIR/facebookresearch/llm-speedrunner/bfde801f7cef707e85a2d8b64b5ee89d9d5f20b5/workspace_templates/nanogpt_speedrun/record_1/train_gpt2.py
//
// (a checkout of each repository at each pinned commit, one folder per commit).
type MirrorSource struct{ Dir string }

// FilePath returns where the mirror keeps f.
func (s MirrorSource) FilePath(f File) string {
	return filepath.Join(s.Dir, filepath.FromSlash(f.Repo), f.Commit, filepath.FromSlash(f.Path))
}

func (s MirrorSource) String() string { return "mirror " + s.Dir }

// Open opens f in the mirror.
func (s MirrorSource) Open(ctx context.Context, f File) (io.ReadCloser, error) {
	fh, err := os.Open(s.FilePath(f))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrMissing, s.FilePath(f))
	}
	return fh, err
}

// builtinSource serves the files built into the package.
type builtinSource struct{}

func (builtinSource) String() string { return "built in" }

func (builtinSource) Open(_ context.Context, f File) (io.ReadCloser, error) {
	fh, err := builtinFS.Open(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: built in %s", ErrMissing, f.Path)
	}
	return fh, err
}

// StorePath returns where a store directory keeps the file of sha256 sum:
// STORE/sha256/SUM. The store is content-addressed: a file is there only
// under its verified hash.
func StorePath(store, sum string) string {
	return filepath.Join(store, "sha256", sum)
}

// Sync fetches every pinned file of cat (see Catalog.Files; Select narrows
// it to some tasks) from src, or from the binary for built-in files, checks
// its size and sha256 against the catalogue, and stores it under dest (see
// StorePath). Files already in the store with the right hash are not
// fetched again. One line per file goes to progress (nil: none).
//
// A file the source lacks (ErrMissing) or whose content differs from its pin
// (ErrHashMismatch, naming the file, the expected and the got sha256) is not
// stored; Sync goes on with the other files and returns all such errors
// joined. They are infrastructure faults: the benchmark's files, not a
// submitter's, are wrong.
func Sync(ctx context.Context, cat *Catalog, dest string, src Source, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	if err := os.MkdirAll(filepath.Join(dest, "sha256"), 0o755); err != nil {
		return fault.Infraf("tasks: sync: %w", err)
	}
	files := cat.Files()
	var errs []error
	fetched, cached := 0, 0
	for i, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		from := src
		if f.Repo == BuiltinRepo {
			from = builtinSource{}
		}
		if err := verifyStored(dest, f); err == nil {
			cached++
			fmt.Fprintf(progress, "[%d/%d] ok (already stored) %s %s\n", i+1, len(files), f.SHA256[:12], f)
			continue
		}
		if from == nil {
			err := fault.Infraf("tasks: sync %s: no source given", f)
			errs = append(errs, err)
			fmt.Fprintf(progress, "[%d/%d] FAILED %s: %v\n", i+1, len(files), f, err)
			continue
		}
		if err := fetchOne(ctx, dest, from, f); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, err)
			fmt.Fprintf(progress, "[%d/%d] FAILED %v\n", i+1, len(files), err)
			continue
		}
		fetched++
		fmt.Fprintf(progress, "[%d/%d] ok %s %s (%d bytes, from %s)\n", i+1, len(files), f.SHA256[:12], f, f.Bytes, from)
	}
	fmt.Fprintf(progress, "synced %d files into %s: %d fetched, %d already stored, %d failed\n",
		len(files), dest, fetched, cached, len(errs))
	if len(errs) > 0 {
		return fault.Infraf("tasks: sync: %d of %d files refused: %w", len(errs), len(files), errors.Join(errs...))
	}
	return nil
}

// fetchOne copies f from src into the store, verifying it on the way.
func fetchOne(ctx context.Context, dest string, src Source, f File) error {
	rc, err := src.Open(ctx, f)
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Join(dest, "sha256"), ".fetch-*")
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(rc, maxPinnedFile+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: read from %s: %w", f, src, err)
	}
	if err := checkContent(f, n, hex.EncodeToString(h.Sum(nil))); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o444); err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	if err := os.Rename(tmp.Name(), StorePath(dest, f.SHA256)); err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	return nil
}

// checkContent compares a file's size and sha256 with its pin.
func checkContent(f File, n int64, got string) error {
	if got != f.SHA256 {
		return fmt.Errorf("%s (%s): %w: expected %s, got %s (%d bytes, expected %d)",
			path.Base(f.Path), f, ErrHashMismatch, f.SHA256, got, n, f.Bytes)
	}
	if n != f.Bytes {
		return fmt.Errorf("%s (%s): %w: sha256 %s matches but size is %d bytes, expected %d",
			path.Base(f.Path), f, ErrHashMismatch, got, n, f.Bytes)
	}
	return nil
}

// readStored returns f's content from the store after checking its hash.
func readStored(store string, f File) ([]byte, error) {
	b, err := os.ReadFile(StorePath(store, f.SHA256))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fault.Infraf("tasks: %s (sha256 %s): %w into %s", f, f.SHA256, ErrNotSynced, store)
	}
	if err != nil {
		return nil, fault.Infraf("tasks: %s: %w", f, err)
	}
	sum := sha256.Sum256(b)
	if err := checkContent(f, int64(len(b)), hex.EncodeToString(sum[:])); err != nil {
		return nil, fault.Infraf("tasks: stored file changed: %w", err)
	}
	return b, nil
}

// ReadStored returns f's content from the store (see Sync), checked against
// its pinned sha256 (ErrNotSynced, ErrHashMismatch).
func ReadStored(store string, f File) ([]byte, error) { return readStored(store, f) }

// verifyStored checks that f is in the store with its pinned hash.
func verifyStored(store string, f File) error {
	_, err := readStored(store, f)
	return err
}

// VerifyStore checks that every pinned file of cat is in the store with its
// pinned sha256; it returns every problem joined (ErrNotSynced, ErrHashMismatch).
func VerifyStore(cat *Catalog, store string) error {
	var errs []error
	for _, f := range cat.Files() {
		if err := verifyStored(store, f); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
