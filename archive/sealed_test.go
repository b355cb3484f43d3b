package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// sealedBackends are the backends plus the check-then-put fallback of a store
// without an atomic create.
func sealedBackends() []backend {
	return append(backends(), backend{"generic", func(t *testing.T) Store { return plainStore{newLocal(t)} }})
}

func TestPutSealed(t *testing.T) {
	ctx := context.Background()
	report := []byte(`{"verdict":"verified","p":0.0012}` + "\n")
	for _, be := range sealedBackends() {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t)
			const key = "verifications/v1/report.json"
			info, err := PutSealed(ctx, st, key, report)
			if err != nil {
				t.Fatalf("first PutSealed: %v", err)
			}
			if info.Key != key || info.Size != int64(len(report)) || info.SHA256 != sum(report) {
				t.Errorf("first PutSealed info = %+v", info)
			}
			if got, _ := getAll(t, st, key); !bytes.Equal(got, report) {
				t.Fatalf("stored %q", got)
			}

			// The same content again is a no-op that describes the stored object.
			again, err := PutSealed(ctx, st, key, slices.Clone(report))
			if err != nil {
				t.Fatalf("PutSealed of the same content: %v", err)
			}
			if again.Key != key || again.Size != int64(len(report)) {
				t.Errorf("second PutSealed info = %+v", again)
			}
			if be.name == "s3" && again.VersionID != info.VersionID {
				t.Errorf("same content wrote a new version: %s, first %s", again.VersionID, info.VersionID)
			}

			for _, tt := range []struct {
				name string
				data []byte
			}{
				{"same length", bytes.Replace(report, []byte("0.0012"), []byte("0.0099"), 1)},
				{"longer", append(slices.Clone(report), ' ')},
				{"prefix", report[:len(report)-1]},
				{"empty", nil},
			} {
				t.Run(tt.name, func(t *testing.T) {
					_, err := PutSealed(ctx, st, key, tt.data)
					if !errors.Is(err, ErrSealed) {
						t.Fatalf("PutSealed of other content = %v, want ErrSealed", err)
					}
					if !strings.Contains(err.Error(), key) {
						t.Errorf("error %q does not name the key", err)
					}
					if got, _ := getAll(t, st, key); !bytes.Equal(got, report) {
						t.Fatalf("sealed object rewritten: %q", got)
					}
				})
			}

			// An empty object is sealed as well.
			if _, err := PutSealed(ctx, st, "audits/a1/report.md", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := PutSealed(ctx, st, "audits/a1/report.md", []byte{}); err != nil {
				t.Errorf("empty again: %v", err)
			}
			if _, err := PutSealed(ctx, st, "audits/a1/report.md", []byte("x")); !errors.Is(err, ErrSealed) {
				t.Errorf("over an empty sealed object: %v, want ErrSealed", err)
			}

			for _, bad := range []string{"", "/abs", "a/../b", "a//b", "a/"} {
				if _, err := PutSealed(ctx, st, bad, report); err == nil || errors.Is(err, ErrSealed) {
					t.Errorf("key %q: err = %v, want an invalid-key error", bad, err)
				}
			}
		})
	}
}

// TestPutSealedConcurrent: of writers racing with different content exactly one
// wins; the others get ErrSealed and the winner's content stays.
func TestPutSealedConcurrent(t *testing.T) {
	ctx := context.Background()
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t)
			const n = 8
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					_, errs[i] = PutSealed(ctx, st, "verifications/race/report.json", fmt.Appendf(nil, "writer %d", i))
				})
			}
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Errorf("writers %d and %d both sealed", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, ErrSealed):
					t.Errorf("writer %d: %v, want ErrSealed", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no writer sealed")
			}
			if got, _ := getAll(t, st, "verifications/race/report.json"); string(got) != fmt.Sprintf("writer %d", winner) {
				t.Errorf("stored %q, winner %d", got, winner)
			}
		})
	}
}

// listDir returns the files under dir (slash paths) with their content.
func listDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFetchFiles(t *testing.T) {
	ctx := context.Background()
	files := bundleFiles()
	files["submission/lib/util.py"] = []byte("def f(): return 1\n")
	files["submission/empty.txt"] = nil
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t)
			b, err := UploadBundle(ctx, st, "f1", writeTree(t, files), testFP)
			if err != nil {
				t.Fatal(err)
			}

			for _, tt := range []struct {
				prefix string
				want   []string // bundle paths
			}{
				{"submission/", []string{"submission/empty.txt", "submission/lib/util.py", "submission/train.py"}},
				{"submission/lib/", []string{"submission/lib/util.py"}},
				{"artifacts/", []string{"artifacts/deep/a/b.c", "artifacts/empty.txt", "artifacts/model.bin"}},
				{"log.txt", nil}, // the prefix itself is no file name
			} {
				t.Run("prefix "+tt.prefix, func(t *testing.T) {
					dir := t.TempDir()
					m, err := FetchFiles(ctx, st, "f1", tt.prefix, dir)
					if tt.want == nil {
						if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
							t.Fatalf("FetchFiles = %v, want ErrNotFound", err)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					if m.RunID != "f1" || len(m.Files) != len(b.Manifest.Files) || m.Environment.ImageID != testFP.ImageID {
						t.Errorf("manifest = %+v", m)
					}
					got := listDir(t, dir)
					want := map[string]string{}
					for _, p := range tt.want {
						want[strings.TrimPrefix(p, tt.prefix)] = string(files[p])
					}
					if len(got) != len(want) {
						t.Errorf("fetched %d files %v, want %d", len(got), keys(got), len(want))
					}
					for p, w := range want {
						if g, ok := got[p]; !ok || g != w {
							t.Errorf("%s: got %d bytes (present %v), want %d", p, len(g), ok, len(w))
						}
					}
				})
			}

			if _, err := FetchFiles(ctx, st, "f1", "nothing/", t.TempDir()); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
				t.Errorf("no files under the prefix: %v, want ErrNotFound", err)
			}
			if _, err := FetchFiles(ctx, st, "missing", "submission/", t.TempDir()); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
				t.Errorf("missing manifest: %v, want ErrNotFound", err)
			}

			// Damage: the latest object differs from the manifest.
			for _, tt := range []struct {
				name string
				data string
			}{
				{"same size", strings.Replace(string(files["submission/train.py"]), "train", "evil!", 1)},
				{"other size", "import os; os.system('x')\n"},
			} {
				t.Run("tampered "+tt.name, func(t *testing.T) {
					if _, err := st.Put(ctx, BundleKey("f1", "submission/train.py"), strings.NewReader(tt.data), -1, ""); err != nil {
						t.Fatal(err)
					}
					dir := t.TempDir()
					_, err := FetchFiles(ctx, st, "f1", "submission/", dir)
					if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "submission/train.py") {
						t.Fatalf("FetchFiles = %v, want ErrCorrupt naming submission/train.py", err)
					}
					if got := listDir(t, dir); slices.Contains(keys(got), "train.py") {
						t.Errorf("the tampered file was left in dir: %v", keys(got))
					}
					// Files of other prefixes are still fetched.
					if _, err := FetchFiles(ctx, st, "f1", "submission/lib/", t.TempDir()); err != nil {
						t.Errorf("untouched prefix: %v", err)
					}
				})
			}
		})
	}

	t.Run("local file changed on disk", func(t *testing.T) {
		st := newLocal(t)
		if _, err := UploadBundle(ctx, st, "f2", writeTree(t, files), testFP); err != nil {
			t.Fatal(err)
		}
		must(t, os.WriteFile(filepath.Join(st.Dir(), "runs", "f2", "submission", "lib", "util.py"), []byte("def f(): return 2\n"), 0o644))
		dir := t.TempDir()
		if _, err := FetchFiles(ctx, st, "f2", "submission/", dir); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("FetchFiles = %v, want ErrCorrupt", err)
		}
		if got := listDir(t, dir); slices.Contains(keys(got), "lib/util.py") {
			t.Errorf("the changed file was left in dir: %v", keys(got))
		}
	})

	t.Run("local file removed", func(t *testing.T) {
		st := newLocal(t)
		if _, err := UploadBundle(ctx, st, "f3", writeTree(t, files), testFP); err != nil {
			t.Fatal(err)
		}
		must(t, os.Remove(filepath.Join(st.Dir(), "runs", "f3", "submission", "train.py")))
		dir := t.TempDir()
		_, err := FetchFiles(ctx, st, "f3", "submission/", dir)
		if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrNotFound) {
			t.Fatalf("FetchFiles = %v, want ErrCorrupt and ErrNotFound", err)
		}
		if got := listDir(t, dir); slices.Contains(keys(got), "train.py") {
			t.Errorf("a missing file was left in dir: %v", keys(got))
		}
	})

	t.Run("manifest with a path out of the bundle", func(t *testing.T) {
		st := newLocal(t)
		for _, p := range []string{"submission/../../escape.py", "submission//x", "submission/./x"} {
			m, err := encodeManifest(Manifest{RunID: "evil", Files: []File{{Path: p, SHA256: sum(nil), Size: 0}}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Put(ctx, BundleKey("evil", ManifestName), bytes.NewReader(m), -1, ""); err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			dir := filepath.Join(parent, "a", "b")
			if _, err := FetchFiles(ctx, st, "evil", "submission/", dir); !errors.Is(err, ErrCorrupt) {
				t.Errorf("path %q: FetchFiles = %v, want ErrCorrupt", p, err)
			}
			if got := listDir(t, parent); len(got) != 0 {
				t.Errorf("path %q: wrote %v", p, keys(got))
			}
		}
	})
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
