package archive

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/repro/repro/fault"
)

// FetchFiles downloads the files of run runID's sealed bundle whose paths start
// with prefix (e.g. "submission/") into dir, prefix stripped, checking every file
// against the manifest while it streams. It returns the manifest. A file that is
// missing or differs from its recorded size or sha256 wraps ErrCorrupt, and dir
// is then left without it: nothing unverified is ever used.
func FetchFiles(ctx context.Context, st Store, runID, prefix, dir string) (Manifest, error) {
	b, err := ReadBundle(ctx, st, runID)
	if err != nil {
		return Manifest{}, err
	}
	n := 0
	for _, f := range b.Manifest.Files {
		rel, ok := strings.CutPrefix(f.Path, prefix)
		if !ok || rel == "" {
			continue
		}
		if checkKey(f.Path) != nil {
			return b.Manifest, fmt.Errorf("archive: fetch %s: %w: manifest lists invalid path %q", runID, ErrCorrupt, f.Path)
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return b.Manifest, fault.Infraf("archive: fetch %s: %w", runID, err)
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return b.Manifest, fault.Infraf("archive: fetch %s: %w", runID, err)
		}
		err = copyVerified(ctx, st, runID, f, out)
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fault.Infraf("archive: fetch %s: %w", runID, cerr)
		}
		if err != nil {
			os.Remove(dst)
			return b.Manifest, err
		}
		n++
	}
	if n == 0 {
		return b.Manifest, fmt.Errorf("archive: fetch %s: the bundle has no files under %q: %w", runID, prefix, ErrNotFound)
	}
	return b.Manifest, nil
}
