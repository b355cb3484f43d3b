package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/repro/repro/fault"
	"github.com/repro/repro/images"
	"github.com/repro/repro/sandbox"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// prepare resolves the image and lays out the workspace and the bundle staging area.
func (e *Executor) prepare(ctx context.Context, r store.Run, lastAttempt bool) (store.Run, error) {
	if r.CancelRequested {
		return e.cancelBeforeStart(ctx, r)
	}
	var image, imageID string
	var err error
	if r.Spec.ImageID != "" {
		image, imageID, err = e.pinnedImage(ctx, r.Spec.ImageID)
	} else {
		image, imageID, err = e.resolveImage(ctx, r.Spec.Environment)
	}
	if err == nil && e.cfg.Images != nil && e.cfg.Images.Client != nil {
		// Image GC removes the least recently used first: this one is used now.
		if terr := images.Touch(ctx, e.cfg.Images.Client, imageID); terr != nil {
			e.log.Warn("marking the image as used", "image", imageID, "err", terr)
		}
	}
	if err == nil {
		err = e.layout(r)
	}
	if err == nil {
		var t *tasks.Task
		if t, err = e.taskOf(r); err == nil {
			err = e.ensureDataset(ctx, t)
		}
	}
	if err != nil {
		if fault.IsUser(err) || lastAttempt {
			return e.failTo(ctx, r, err)
		}
		r, terr := e.store.Transition(ctx, r.ID, []store.State{store.Preparing}, store.Queued, func(r *store.Run) {
			r.Reason = "waiting to retry after an infrastructure fault: " + err.Error()
		})
		if terr != nil {
			return r, terr
		}
		return r, fmt.Errorf("%w: %w", errRetry, err)
	}
	return e.store.Transition(ctx, r.ID, []store.State{store.Preparing}, store.Running, func(r *store.Run) {
		now := time.Now().UTC()
		r.Image, r.ImageID, r.StartedAt = image, imageID, &now
	})
}

func (e *Executor) cancelBeforeStart(ctx context.Context, r store.Run) (store.Run, error) {
	plan := outcome{State: store.Canceled, Reason: "canceled before it started", Canceled: true}
	if err := e.writeOutcome(r, plan); err != nil {
		return r, err
	}
	return e.store.Transition(ctx, r.ID, []store.State{r.State}, store.Archiving, func(r *store.Run) { r.Reason = plan.Reason })
}

// layout makes a fresh workspace (a copy of the submission plus out/, owned by the
// container user) and the bundle staging folder (with its own copy of the submission).
func (e *Executor) layout(r store.Run) error {
	p := store.RunPaths(e.cfg.DataDir, r.ID)
	if err := sandbox.PrepareWorkspace(p.Workspace, e.cfg.Limits.WorkspaceBytes); err != nil {
		return err
	}
	if err := os.RemoveAll(p.Bundle); err != nil {
		return fault.Infraf("bundle staging: %w", err)
	}
	if err := copyTree(p.Submission, p.Workspace); err != nil {
		if errors.Is(err, syscall.ENOSPC) && e.cfg.Limits.WorkspaceBytes > 0 {
			return fault.Userf("workspace: the submission does not fit the workspace quota of %d MiB", e.cfg.Limits.WorkspaceBytes>>20)
		}
		return fault.Infraf("workspace: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(p.Workspace, "out"), 0o755); err != nil {
		return fault.Infraf("workspace: %w", err)
	}
	if err := chownTree(p.Workspace, e.cfg.User); err != nil {
		return fault.Infraf("workspace: %w", err)
	}
	if err := copyTree(p.Submission, filepath.Join(p.Bundle, "submission")); err != nil {
		return fault.Infraf("bundle staging: %w", err)
	}
	return nil
}

// copyTree copies regular files and folders from src to dst (created).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyFile(path, target)
		default:
			return fmt.Errorf("%s: not a regular file", rel)
		}
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// chownTree gives the tree to the container user. When this process may not chown
// (not root), the tree is made world-writable instead so the script can still write.
func chownTree(root, user string) error {
	uid, gid, err := parseUser(user)
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if cerr := os.Lchown(path, uid, gid); cerr != nil {
			mode := os.FileMode(0o666)
			if d.IsDir() {
				mode = 0o777
			}
			return os.Chmod(path, mode)
		}
		return nil
	})
}

func parseUser(user string) (int, int, error) {
	u, g, ok := strings.Cut(user, ":")
	if !ok {
		g = u
	}
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("container user %q: want numeric uid:gid", user)
	}
	return uid, gid, nil
}
