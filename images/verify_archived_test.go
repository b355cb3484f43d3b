package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/fault"
)

// putArchived writes an archived image (object and record) as Save would,
// without Docker, and returns the record.
func putArchived(t *testing.T, st archive.Store, imageID string, object []byte) ArchivedImage {
	t.Helper()
	ctx := context.Background()
	objKey, recKey, err := ArchiveKeys(imageID)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(object)
	a := ArchivedImage{ImageID: imageID, Key: objKey, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(object)),
		TarSHA: strings.Repeat("0", 64), TarSize: 3 * int64(len(object)), Compression: "zstd", SavedAt: time.Now().UTC().Truncate(time.Second)}
	if _, err := st.Put(ctx, objKey, bytes.NewReader(object), int64(len(object)), ""); err != nil {
		t.Fatal(err)
	}
	rec, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, recKey, bytes.NewReader(rec), int64(len(rec)), ""); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestVerifyArchived(t *testing.T) {
	ctx := context.Background()
	object := bytes.Repeat([]byte("zstd frame of docker save output\n"), 4000)
	tests := []struct {
		name      string
		damage    func(t *testing.T, st *archive.Local, a ArchivedImage)
		ask       func(id string) string // the ID VerifyArchived is given
		corrupt   bool
		notFound  bool
		userFault bool
	}{
		{name: "intact"},
		{name: "intact, bare hex ID", ask: func(id string) string { return strings.TrimPrefix(id, "sha256:") }},
		{name: "object rewritten, same size", corrupt: true, damage: func(t *testing.T, st *archive.Local, a ArchivedImage) {
			b := bytes.Clone(object)
			b[len(b)/2] ^= 1
			if _, err := st.Put(ctx, a.Key, bytes.NewReader(b), -1, ""); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "object changed on disk", corrupt: true, damage: func(t *testing.T, st *archive.Local, a ArchivedImage) {
			if err := os.WriteFile(filepath.Join(st.Dir(), filepath.FromSlash(a.Key)), []byte("evil"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "object truncated", corrupt: true, damage: func(t *testing.T, st *archive.Local, a ArchivedImage) {
			if err := os.Truncate(filepath.Join(st.Dir(), filepath.FromSlash(a.Key)), a.Size-1); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "object missing", corrupt: true, notFound: true, damage: func(t *testing.T, st *archive.Local, a ArchivedImage) {
			if err := os.Remove(filepath.Join(st.Dir(), filepath.FromSlash(a.Key))); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "never archived", notFound: true, ask: func(string) string { return "sha256:" + strings.Repeat("e", 64) }},
		{name: "not an image ID", userFault: true, ask: func(string) string { return "repro/torch:latest" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := archive.NewLocal(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			id := "sha256:" + strings.Repeat("3c", 32)
			want := putArchived(t, st, id, object)
			if tt.damage != nil {
				tt.damage(t, st, want)
			}
			ask := id
			if tt.ask != nil {
				ask = tt.ask(id)
			}
			got, err := VerifyArchived(ctx, st, ask)
			switch {
			case tt.userFault:
				if err == nil || !fault.IsUser(err) {
					t.Fatalf("VerifyArchived = %v, want a user fault", err)
				}
			case tt.corrupt || tt.notFound:
				if errors.Is(err, archive.ErrCorrupt) != tt.corrupt || errors.Is(err, archive.ErrNotFound) != tt.notFound {
					t.Fatalf("VerifyArchived = %v, want ErrCorrupt %v, ErrNotFound %v", err, tt.corrupt, tt.notFound)
				}
				if tt.corrupt && !strings.Contains(err.Error(), want.Key) {
					t.Errorf("error %q does not name the object", err)
				}
			default:
				if err != nil {
					t.Fatalf("VerifyArchived: %v", err)
				}
				if got.ImageID != want.ImageID || got.Key != want.Key || got.SHA256 != want.SHA256 || got.Size != want.Size || !got.SavedAt.Equal(want.SavedAt) {
					t.Errorf("record = %+v, want %+v", got, want)
				}
			}
		})
	}
}
