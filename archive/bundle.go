package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/repro/repro/fault"
)

// ManifestName is the bundle file that lists every other file; it is written
// last, so a bundle without it is incomplete.
const ManifestName = "manifest.json"

// maxManifestSize bounds how much of a stored manifest is read.
const maxManifestSize = 64 << 20

// errExists reports that a create-only put found its key taken.
var errExists = errors.New("archive: object already exists")

// createStore is implemented by stores that can create an object only if its key
// is free, atomically (both backends here). UploadBundle seals bundles with it;
// with other Store implementations it falls back to check-then-put.
type createStore interface {
	putIfAbsent(ctx context.Context, key string, data []byte) (ObjectInfo, error)
}

// Both backends seal manifests atomically; a signature drift must not silently
// fall back to check-then-put.
var (
	_ createStore = (*Local)(nil)
	_ createStore = (*S3)(nil)
)

// File is one file of a bundle, as listed in its manifest.
type File struct {
	Path   string `json:"path"` // relative to runs/<run-id>/, slash-separated
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Fingerprint is the environment a run ran in: enough to run it again the same
// way and to explain a drift.
type Fingerprint struct {
	ImageID               string `json:"image_id,omitempty"`
	ImageDigest           string `json:"image_digest,omitempty"`
	Environment           string `json:"environment,omitempty"`
	ScriptSHA256          string `json:"script_sha256,omitempty"`
	DatasetManifestSHA256 string `json:"dataset_manifest_sha256,omitempty"`
	// Seed is always written: 0 is a seed like any other.
	Seed          int64    `json:"seed"`
	GPUModels     []string `json:"gpu_models,omitempty"`
	GPUUUIDs      []string `json:"gpu_uuids,omitempty"`
	DriverVersion string   `json:"driver_version,omitempty"`
	CUDAVersion   string   `json:"cuda_version,omitempty"`
	Host          string   `json:"host,omitempty"`
	ReproVersion  string   `json:"repro_version,omitempty"`
}

// Manifest is runs/<run-id>/manifest.json.
type Manifest struct {
	RunID       string      `json:"run_id"`
	CreatedAt   time.Time   `json:"created_at"`
	Files       []File      `json:"files"` // sorted by Path
	Environment Fingerprint `json:"environment"`
}

// Bundle is an archived run.
type Bundle struct {
	Location       string // the bundle's prefix, e.g. "s3://bucket/runs/ID/"
	ManifestSHA256 string // hex sha256 of manifest.json as stored
	Manifest       Manifest
}

// BundleKey returns the key of path inside run runID's bundle:
// "runs/<runID>/<path>" (path "" gives the bundle's prefix, "runs/<runID>/").
func BundleKey(runID, path string) string {
	return "runs/" + runID + "/" + path
}

// checkRunID validates a run ID: one key element.
func checkRunID(runID string) error {
	if runID == "" || strings.Contains(runID, "/") || checkKey(runID) != nil {
		return fmt.Errorf("archive: invalid run ID %q", runID)
	}
	return nil
}

// encodeManifest is the stored form of m: indented JSON and a newline.
func encodeManifest(m Manifest) ([]byte, error) {
	if m.Files == nil {
		m.Files = []File{}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("archive: encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// sameContent reports whether two manifests describe the same bundle: the same
// run, files and environment (CreatedAt aside, which differs between attempts).
func sameContent(a, b Manifest) bool {
	a.CreatedAt, b.CreatedAt = time.Time{}, time.Time{}
	ja, err1 := encodeManifest(a)
	jb, err2 := encodeManifest(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// ReadBundle reads run runID's manifest. A run without one (never archived, or
// whose upload did not finish) gives ErrNotFound.
func ReadBundle(ctx context.Context, st Store, runID string) (Bundle, error) {
	if err := checkRunID(runID); err != nil {
		return Bundle{}, err
	}
	key := BundleKey(runID, ManifestName)
	rc, _, err := st.Get(ctx, key)
	if err != nil {
		return Bundle{}, fmt.Errorf("archive: bundle %s: manifest: %w", runID, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxManifestSize+1))
	if err != nil {
		return Bundle{}, fmt.Errorf("archive: bundle %s: read manifest: %w", runID, err)
	}
	if len(data) > maxManifestSize {
		return Bundle{}, fmt.Errorf("archive: bundle %s: %w: manifest larger than %d bytes", runID, ErrCorrupt, maxManifestSize)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Bundle{}, fmt.Errorf("archive: bundle %s: %w: manifest: %v", runID, ErrCorrupt, err)
	}
	if m.RunID != runID {
		return Bundle{}, fmt.Errorf("archive: bundle %s: %w: manifest names run %q", runID, ErrCorrupt, m.RunID)
	}
	sum := sha256.Sum256(data)
	return Bundle{Location: st.Location(BundleKey(runID, "")), ManifestSHA256: hex.EncodeToString(sum[:]), Manifest: m}, nil
}

// localFile is one regular file found under a bundle directory.
type localFile struct {
	File
	info fs.FileInfo // from the walk, to detect a swap before upload
}

// scanBundle lists and hashes every regular file under root, sorted by path. It
// refuses symlinks, special files and names that cannot be keys: a script can
// plant anything in its output folder.
func scanBundle(ctx context.Context, root *os.Root) ([]localFile, error) {
	var files []localFile
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		switch t := d.Type(); {
		case t&fs.ModeSymlink != 0:
			return fault.Userf("archive: bundle file %q is a symbolic link; a bundle holds regular files only", p)
		case d.IsDir():
			return nil
		case !t.IsRegular():
			return fault.Userf("archive: bundle file %q is a special file (%s); a bundle holds regular files only", p, t.Type())
		}
		if p == ManifestName {
			return fault.Userf("archive: bundle directory holds a %s of its own; that name is reserved for the archive's manifest", ManifestName)
		}
		if !utf8.ValidString(p) {
			return fault.Userf("archive: bundle file name %q is not valid UTF-8", p)
		}
		if len(BundleKey("x", p)) > maxKeyLen-64 || checkKey(p) != nil {
			return fault.Userf("archive: bundle file name %.80q is not a valid object key (too long or malformed)", p)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		sum, n, err := hashFile(ctx, root, p, fi)
		if err != nil {
			return err
		}
		files = append(files, localFile{File: File{Path: p, SHA256: sum, Size: n}, info: fi})
		return nil
	})
	if err != nil {
		if fault.IsUser(err) || ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("archive: scan bundle %s: %w", root.Name(), err)
	}
	slices.SortFunc(files, func(a, b localFile) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// openRegular opens p under root and checks that it is still the regular file
// the walk saw (not swapped for a link or special file since).
func openRegular(root *os.Root, p string, want fs.FileInfo) (*os.File, fs.FileInfo, error) {
	f, err := root.Open(p)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() || !os.SameFile(fi, want) {
		f.Close()
		return nil, nil, fault.Userf("archive: bundle file %q was replaced while being archived", p)
	}
	return f, fi, nil
}

// hashFile returns the sha256 and length of p.
func hashFile(ctx context.Context, root *os.Root, p string, want fs.FileInfo) (string, int64, error) {
	f, _, err := openRegular(root, p, want)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := copyCtx(ctx, h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// UploadBundle archives run runID: every regular file under dir goes to
// runs/<runID>/<relative path>, then manifest.json, listing them with sha256 and
// size and carrying fp, goes last, so that a bundle without a manifest is known
// to be incomplete.
//
// Files are hashed in a first pass and uploaded in a second, which re-hashes the
// stream and fails (ErrCorrupt) if a file changed in between; memory stays
// bounded whatever the file sizes. UploadBundle is idempotent, for crash
// recovery: objects already stored with the same size and sha256 are skipped,
// and if the manifest exists with the same files and fingerprint the stored
// bundle is returned. If it exists with different content the bundle is sealed:
// the error wraps ErrSealed. Symlinks, special files and unusable names under dir
// are refused as user faults (a script can plant them in its output folder).
func UploadBundle(ctx context.Context, st Store, runID, dir string, fp Fingerprint) (Bundle, error) {
	if err := checkRunID(runID); err != nil {
		return Bundle{}, err
	}
	if fi, err := os.Lstat(dir); err != nil {
		return Bundle{}, fmt.Errorf("archive: bundle %s: %w", runID, err)
	} else if fi.Mode()&fs.ModeSymlink != 0 {
		return Bundle{}, fault.Userf("archive: bundle %s: directory %s is a symbolic link", runID, dir)
	} else if !fi.IsDir() {
		return Bundle{}, fmt.Errorf("archive: bundle %s: %s is not a directory", runID, dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Bundle{}, fmt.Errorf("archive: bundle %s: %w", runID, err)
	}
	defer root.Close()

	files, err := scanBundle(ctx, root)
	if err != nil {
		return Bundle{}, fmt.Errorf("archive: bundle %s: %w", runID, err)
	}
	m := Manifest{RunID: runID, CreatedAt: time.Now().UTC().Truncate(time.Millisecond), Files: make([]File, len(files)), Environment: fp}
	for i, f := range files {
		m.Files[i] = f.File
	}

	// Already sealed?
	if b, err := ReadBundle(ctx, st, runID); err == nil {
		return sealedAs(b, m)
	} else if !errors.Is(err, ErrNotFound) {
		return Bundle{}, err
	}

	stored, err := storedObjects(ctx, st, runID)
	if err != nil {
		return Bundle{}, err
	}
	for _, f := range files {
		key := BundleKey(runID, f.Path)
		if have, ok := stored[key]; ok && have.Size == f.Size && have.SHA256 == f.SHA256 {
			continue // uploaded by an earlier attempt
		}
		if err := putFile(ctx, st, root, key, f); err != nil {
			return Bundle{}, fmt.Errorf("archive: bundle %s: %w", runID, err)
		}
	}
	return seal(ctx, st, m)
}

// storedObjects lists what an earlier attempt left of run runID's bundle, with
// sha256s (fetched one by one where the listing lacks them).
func storedObjects(ctx context.Context, st Store, runID string) (map[string]ObjectInfo, error) {
	list, err := st.List(ctx, BundleKey(runID, ""))
	if err != nil {
		return nil, fmt.Errorf("archive: bundle %s: list: %w", runID, err)
	}
	out := make(map[string]ObjectInfo, len(list))
	for _, oi := range list {
		if oi.SHA256 == "" {
			if oi, err = st.Stat(ctx, oi.Key); err != nil {
				if errors.Is(err, ErrNotFound) {
					continue
				}
				return nil, fmt.Errorf("archive: bundle %s: %w", runID, err)
			}
		}
		out[oi.Key] = oi
	}
	return out, nil
}

// putFile uploads one bundle file with its digest from the first pass.
func putFile(ctx context.Context, st Store, root *os.Root, key string, f localFile) error {
	fh, fi, err := openRegular(root, f.Path, f.info)
	if err != nil {
		return err
	}
	defer fh.Close()
	if fi.Size() != f.Size {
		return fmt.Errorf("archive: put %s: %w: file changed size from %d to %d while being archived", key, ErrCorrupt, f.Size, fi.Size())
	}
	_, err = st.Put(ctx, key, fh, f.Size, f.SHA256)
	return err
}

// seal writes the manifest, unless one appeared meanwhile.
func seal(ctx context.Context, st Store, m Manifest) (Bundle, error) {
	data, err := encodeManifest(m)
	if err != nil {
		return Bundle{}, err
	}
	_, err = createOnce(ctx, st, BundleKey(m.RunID, ManifestName), data)
	if errors.Is(err, errExists) {
		b, rerr := ReadBundle(ctx, st, m.RunID)
		if rerr != nil {
			return Bundle{}, fmt.Errorf("archive: bundle %s sealed concurrently: %w", m.RunID, rerr)
		}
		return sealedAs(b, m)
	}
	if err != nil {
		return Bundle{}, fmt.Errorf("archive: bundle %s: write manifest: %w", m.RunID, err)
	}
	return Bundle{Location: st.Location(BundleKey(m.RunID, "")), ManifestSHA256: sha256Hex(data), Manifest: m}, nil
}

// sealedAs returns the stored bundle b if it has m's content, or ErrSealed.
func sealedAs(b Bundle, m Manifest) (Bundle, error) {
	if !sameContent(b.Manifest, m) {
		return Bundle{}, fmt.Errorf("archive: bundle %s (archived %s, manifest sha256 %s): %w",
			m.RunID, b.Manifest.CreatedAt.Format(time.RFC3339), b.ManifestSHA256, ErrSealed)
	}
	return b, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// VerifyBundle reads run runID's manifest and re-hashes every object it lists.
// It returns the manifest, and an error naming the first file that is missing
// (wrapping ErrCorrupt and ErrNotFound) or whose size or sha256 differs (wrapping
// ErrCorrupt). A run without a manifest gives ErrNotFound alone.
func VerifyBundle(ctx context.Context, st Store, runID string) (Manifest, error) {
	b, err := ReadBundle(ctx, st, runID)
	if err != nil {
		return Manifest{}, err
	}
	m := b.Manifest
	for _, f := range m.Files {
		if err := verifyFile(ctx, st, runID, f); err != nil {
			return m, err
		}
	}
	return m, nil
}

// verifyFile re-hashes one listed object.
func verifyFile(ctx context.Context, st Store, runID string, f File) error {
	return copyVerified(ctx, st, runID, f, io.Discard)
}

// copyVerified copies one listed object to dst, hashing it on the way; a size or
// sha256 that differs from the manifest's wraps ErrCorrupt (dst then holds
// content that must not be used).
func copyVerified(ctx context.Context, st Store, runID string, f File, dst io.Writer) error {
	if f.Path == ManifestName || checkKey(f.Path) != nil {
		return fmt.Errorf("archive: verify %s: %w: manifest lists invalid path %q", runID, ErrCorrupt, f.Path)
	}
	key := BundleKey(runID, f.Path)
	rc, _, err := st.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("archive: verify %s: %s: %w: listed file missing (%w)", runID, f.Path, ErrCorrupt, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("archive: verify %s: %w", runID, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := copyCtx(ctx, io.MultiWriter(h, dst), rc)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("archive: verify %s: %s: %w", runID, f.Path, err)
		}
		return fault.Infraf("archive: verify %s: %s: read: %w", runID, f.Path, err)
	}
	if n != f.Size {
		return fmt.Errorf("archive: verify %s: %s: %w: %d bytes stored, manifest says %d", runID, f.Path, ErrCorrupt, n, f.Size)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.SHA256 {
		return fmt.Errorf("archive: verify %s: %s: %w: sha256 %s stored, manifest says %s", runID, f.Path, ErrCorrupt, sum, f.SHA256)
	}
	return nil
}
