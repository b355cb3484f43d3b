package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/moby/moby/client"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/fault"
)

// ArchivePrefix is where images are kept in the object store.
const ArchivePrefix = "images/"

// ArchivedImage describes one image kept in the archive: the object
// images/<hex>.tar.zst (docker save output, zstd-compressed) and its record
// images/<hex>.json, written last, so that an image is archived exactly when its
// record exists.
type ArchivedImage struct {
	ImageID  string   `json:"image_id"` // "sha256:<hex>"
	Key      string   `json:"key"`      // "images/<hex>.tar.zst"
	SHA256   string   `json:"sha256"`   // of the compressed object
	Size     int64    `json:"size"`     // of the compressed object
	TarSHA   string   `json:"tar_sha256"`
	TarSize  int64    `json:"tar_size"` // docker save's output, uncompressed
	RepoTags []string `json:"repo_tags,omitempty"`
	// Labels are the image's labels (repro.env, ...), for people browsing the archive.
	Labels      map[string]string `json:"labels,omitempty"`
	Compression string            `json:"compression"` // "zstd"
	SavedAt     time.Time         `json:"saved_at"`
	// Existing: Save found the image already archived and did nothing.
	Existing bool `json:"-"`
}

var imageIDRE = regexp.MustCompile(`^(sha256:)?([0-9a-f]{64})$`)

// normImageID accepts "sha256:<hex>" or "<hex>" and returns both forms.
func normImageID(id string) (full, hexID string, err error) {
	m := imageIDRE.FindStringSubmatch(id)
	if m == nil {
		return "", "", fault.Userf("images: %q is not an image ID (want sha256:<64 hex digits>)", id)
	}
	return "sha256:" + m[2], m[2], nil
}

// ArchiveKeys returns the keys of an image's object and record.
func ArchiveKeys(imageID string) (object, record string, err error) {
	_, h, err := normImageID(imageID)
	if err != nil {
		return "", "", err
	}
	return ArchivePrefix + h + ".tar.zst", ArchivePrefix + h + ".json", nil
}

// Archived returns the record of an archived image; a missing one wraps
// archive.ErrNotFound.
func Archived(ctx context.Context, st archive.Store, imageID string) (ArchivedImage, error) {
	_, recKey, err := ArchiveKeys(imageID)
	if err != nil {
		return ArchivedImage{}, err
	}
	rc, _, err := st.Get(ctx, recKey)
	if err != nil {
		if errors.Is(err, archive.ErrNotFound) {
			return ArchivedImage{}, fmt.Errorf("images: %s is not archived: %w", imageID, err)
		}
		return ArchivedImage{}, fault.Infraf("images: read %s: %w", recKey, err)
	}
	defer rc.Close()
	var a ArchivedImage
	if err := json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&a); err != nil {
		return ArchivedImage{}, fmt.Errorf("images: the record %s is not readable: %v: %w", recKey, err, archive.ErrCorrupt)
	}
	if full, _, _ := normImageID(imageID); a.ImageID != full {
		return a, fmt.Errorf("images: the record %s names image %s, not %s: %w", recKey, a.ImageID, full, archive.ErrCorrupt)
	}
	return a, nil
}

// VerifyArchived re-hashes the archived image imageID and compares it with its
// record: a missing object wraps archive.ErrNotFound, one whose size or sha256
// differs wraps archive.ErrCorrupt. An audit checks this before it trusts a
// restore (a host that still has the image would never notice).
func VerifyArchived(ctx context.Context, st archive.Store, imageID string) (ArchivedImage, error) {
	a, err := Archived(ctx, st, imageID)
	if err != nil {
		return a, err
	}
	rc, _, err := st.Get(ctx, a.Key)
	if err != nil {
		if errors.Is(err, archive.ErrNotFound) {
			return a, fmt.Errorf("images: %s: the archived image %s is missing: %w (%w)", imageID, a.Key, archive.ErrCorrupt, err)
		}
		return a, fault.Infraf("images: read %s: %w", a.Key, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return a, fault.Infraf("images: read %s: %w", a.Key, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != a.Size || got != a.SHA256 {
		return a, fmt.Errorf("images: %s: the archived image %s has %d bytes with sha256 %s; its record says %d bytes, sha256 %s: %w",
			imageID, a.Key, n, got, a.Size, a.SHA256, archive.ErrCorrupt)
	}
	return a, nil
}

// Save keeps the local image imageID in st, once: when its record exists (and the
// object has the recorded size) it returns that with Existing set. Otherwise it
// streams `docker save` of the image — under the tags that point at it, so that a
// restore brings them back — through zstd into images/<hex>.tar.zst, hashing on
// the way, then writes the record. Memory stays bounded whatever the image size.
// progress (nil discards) gets a line now and then.
func Save(ctx context.Context, cli *client.Client, st archive.Store, imageID string, progress io.Writer) (ArchivedImage, error) {
	full, _, err := normImageID(imageID)
	if err != nil {
		return ArchivedImage{}, err
	}
	if progress == nil {
		progress = io.Discard
	}
	objKey, recKey, _ := ArchiveKeys(full)
	if a, err := Archived(ctx, st, full); err == nil {
		if oi, serr := st.Stat(ctx, objKey); serr == nil && oi.Size == a.Size {
			a.Existing = true
			return a, nil
		}
	} else if !errors.Is(err, archive.ErrNotFound) {
		return ArchivedImage{}, err
	}

	info, err := cli.ImageInspect(ctx, full)
	if err != nil {
		return ArchivedImage{}, fault.Infraf("images: save %s: %w", full, err)
	}
	refs := []string{full}
	var tags []string
	for _, t := range info.RepoTags {
		if t != "" && t != "<none>:<none>" {
			tags = append(tags, t)
		}
	}
	if len(tags) > 0 {
		refs = tags
	}
	start := time.Now()
	fmt.Fprintf(progress, "saving %s (%s, %s) to %s\n", full, strings.Join(tags, ", "), humanBytes(info.Size), st.Location(objKey))
	rc, err := cli.ImageSave(ctx, refs)
	if err != nil {
		return ArchivedImage{}, fault.Infraf("images: save %s: %w", full, err)
	}
	defer rc.Close()

	tarSum := sha256.New()
	tarN := &countingWriter{progress: progress, every: 512 << 20, start: start}
	pr, pw := io.Pipe()
	zSum := sha256.New()
	zN := &countingWriter{}
	go func() {
		enc, err := zstd.NewWriter(io.MultiWriter(pw, zSum, zN), zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		_, err = io.Copy(enc, io.TeeReader(rc, io.MultiWriter(tarSum, tarN)))
		if cerr := enc.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	if _, err := st.Put(ctx, objKey, pr, -1, ""); err != nil {
		pr.CloseWithError(err)
		return ArchivedImage{}, fault.Infraf("images: save %s to %s: %w", full, st.Location(objKey), err)
	}
	a := ArchivedImage{
		ImageID:     full,
		Key:         objKey,
		SHA256:      hex.EncodeToString(zSum.Sum(nil)),
		Size:        zN.n,
		TarSHA:      hex.EncodeToString(tarSum.Sum(nil)),
		TarSize:     tarN.n,
		RepoTags:    tags,
		Compression: "zstd",
		SavedAt:     time.Now().UTC(),
	}
	if info.Config != nil {
		a.Labels = info.Config.Labels
	}
	rec, err := json.MarshalIndent(a, "", " ")
	if err != nil {
		return ArchivedImage{}, err
	}
	if _, err := st.Put(ctx, recKey, bytes.NewReader(rec), int64(len(rec)), ""); err != nil {
		return ArchivedImage{}, fault.Infraf("images: save %s: record %s: %w", full, recKey, err)
	}
	d := time.Since(start)
	fmt.Fprintf(progress, "saved %s: %s → %s zstd in %s (%s/s)\n", full, humanBytes(a.TarSize), humanBytes(a.Size), d.Round(time.Millisecond), humanBytes(int64(float64(a.TarSize)/d.Seconds())))
	slog.Default().Info("image archived", "component", "images", "image", full, "key", objKey, "tar_bytes", a.TarSize, "bytes", a.Size, "duration", d)
	return a, nil
}

// Restore makes sure the image imageID is on the docker host: when it is absent
// it streams its archived object from st through zstd into `docker load`, then
// verifies the object's sha256 against the record and that the loaded image has
// exactly the ID asked for (dockerd checks every layer against the image config,
// whose digest is the ID). Tags saved with the image come back too.
func Restore(ctx context.Context, cli *client.Client, st archive.Store, imageID string) error {
	full, _, err := normImageID(imageID)
	if err != nil {
		return err
	}
	if _, _, ok, err := inspectImage(ctx, cli, full); err != nil || ok {
		return err
	}
	a, err := Archived(ctx, st, full)
	if err != nil {
		if errors.Is(err, archive.ErrNotFound) {
			return fault.Infraf("images: restore %s: absent from the docker host and from the archive (%s): %w", full, st.Location(ArchivePrefix), err)
		}
		return err
	}
	start := time.Now()
	rc, oi, err := st.Get(ctx, a.Key)
	if err != nil {
		return fault.Infraf("images: restore %s: %w", full, err)
	}
	defer rc.Close()
	if oi.Size != a.Size {
		return fault.Infraf("images: restore %s: %s has %d bytes, its record says %d: %w", full, a.Key, oi.Size, a.Size, archive.ErrCorrupt)
	}
	sum := sha256.New()
	dec, err := zstd.NewReader(io.TeeReader(rc, sum), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return fault.Infraf("images: restore %s: %w", full, err)
	}
	defer dec.Close()
	// One goroutine reads the object, to its end: into docker load while the daemon
	// reads, then on into the hash alone (the daemon stops at the end of the tar).
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(&detachWriter{w: pw}, dec)
		pw.CloseWithError(err)
		done <- err
	}()
	resp, err := cli.ImageLoad(ctx, pr, client.ImageLoadWithQuiet(true))
	var out bytes.Buffer
	if err == nil {
		_, err = readBuildStream(resp, &out)
		resp.Close()
	}
	pr.Close()
	derr := <-done
	switch {
	case derr != nil:
		removeImage(ctx, cli, full)
		return fault.Infraf("images: restore %s: reading %s: %w", full, a.Key, derr)
	case err != nil:
		return fault.Infraf("images: restore %s: docker load: %w", full, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != a.SHA256 {
		removeImage(ctx, cli, full)
		return fault.Infraf("images: restore %s: %s has sha256 %s, its record says %s: %w", full, a.Key, got, a.SHA256, archive.ErrCorrupt)
	}
	if _, _, ok, err := inspectImage(ctx, cli, full); err != nil {
		return err
	} else if !ok {
		return fault.Infraf("images: restore %s: docker load of %s did not produce that image ID (%s): %w", full, a.Key, strings.TrimSpace(out.String()), archive.ErrCorrupt)
	}
	slog.Default().Info("image restored", "component", "images", "image", full, "key", a.Key, "duration", time.Since(start))
	return nil
}

// removeImage removes an image that a failed restore loaded (best effort).
func removeImage(ctx context.Context, cli *client.Client, id string) {
	if _, err := cli.ImageRemove(ctx, id, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
		slog.Default().Warn("cannot remove image", "component", "images", "image", id, "err", err)
	}
}

// detachWriter writes to w until w fails (its reader went away), then swallows
// the rest, so that the copy feeding it runs to its end.
type detachWriter struct {
	w      io.Writer
	failed bool
}

func (d *detachWriter) Write(p []byte) (int, error) {
	if !d.failed {
		if _, err := d.w.Write(p); err != nil {
			d.failed = true
		}
	}
	return len(p), nil
}

// countingWriter counts bytes and, with progress set, reports every `every` bytes.
type countingWriter struct {
	n        int64
	progress io.Writer
	every    int64
	next     int64
	start    time.Time
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.progress != nil && c.every > 0 && c.n >= c.next+c.every {
		c.next = c.n - c.n%c.every
		fmt.Fprintf(c.progress, "  %s saved (%s)\n", humanBytes(c.n), time.Since(c.start).Round(time.Second))
	}
	return len(p), nil
}

// humanBytes formats n with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
