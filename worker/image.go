package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/moby/moby/client"

	"github.com/repro/repro/fault"
	"github.com/repro/repro/images"
)

// Images gives the worker the environment catalogue: images are built from it when a
// run needs one this host lacks, and every image a run used is saved to the archive.
type Images struct {
	Catalog *images.Catalog
	Builder *images.Builder
	// Client is the Docker client the image archive uses.
	Client *client.Client
	// Watermark: above this much image disk use, the reaper removes repro-built images
	// no active run uses, least recently used first (0: never).
	Watermark int64
}

// gcImages removes unused environment images above the watermark; the images of
// runs a worker holds are kept (archived images can be restored later anyway).
func (e *Executor) gcImages(ctx context.Context) error {
	if e.cfg.Images == nil || e.cfg.Images.Client == nil || e.cfg.Images.Watermark <= 0 {
		return nil
	}
	active, err := e.store.ActiveRuns(ctx)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, r := range active {
		if r.ImageID != "" {
			keep[r.ImageID] = true
		}
	}
	removed, err := images.GC(ctx, e.cfg.Images.Client, keep, e.cfg.Images.Watermark)
	for _, id := range removed {
		e.log.Info("removed unused image", "image", id)
	}
	return err
}

// pinnedImage returns the exact image a run pinned (an audit's re-run): the local
// one, else restored from the archive, which checks it against its record. A
// pinned image is never built: a rebuild would not be the same image.
func (e *Executor) pinnedImage(ctx context.Context, imageID string) (string, string, error) {
	if id, err := e.docker.ImageID(ctx, imageID); err == nil {
		return imageID, id, nil
	}
	if e.cfg.Images == nil || e.cfg.Images.Client == nil {
		return "", "", fault.Infraf("image %s is not on worker %s, which cannot restore images", imageID, e.cfg.Host)
	}
	e.log.Info("restoring a pinned image from the archive", "id", imageID)
	if err := images.Restore(ctx, e.cfg.Images.Client, e.archive, imageID); err != nil {
		return "", "", err
	}
	id, err := e.docker.ImageID(ctx, imageID)
	return imageID, id, err
}

// resolveImage returns the image of environment env and its local ID. Explicitly
// registered environments (--environment NAME=IMAGE) win; a catalogue environment
// is built (strictly: only from a complete lock) when this host lacks its image.
func (e *Executor) resolveImage(ctx context.Context, env string) (string, string, error) {
	if img, ok := e.cfg.Environments[env]; ok {
		id, err := e.docker.ImageID(ctx, img)
		if err != nil {
			if restored, rerr := e.restoreByRef(ctx, img); rerr == nil && restored != "" {
				return img, restored, nil
			}
		}
		return img, id, err
	}
	if e.cfg.Images == nil || e.cfg.Images.Catalog == nil {
		return "", "", fault.Infraf("environment %q is not registered on worker %s", env, e.cfg.Host)
	}
	ce, ok := e.cfg.Images.Catalog.Get(env)
	if !ok {
		return "", "", fault.Infraf("environment %q is neither registered nor in the catalogue of worker %s", env, e.cfg.Host)
	}
	tag, err := ce.Tag()
	if err != nil {
		return "", "", fault.Infraf("environment %s: %w", env, err)
	}
	if id, err := e.docker.ImageID(ctx, tag); err == nil {
		return tag, id, nil
	}
	if restored, err := e.restoreByRef(ctx, tag); err != nil {
		return "", "", err
	} else if restored != "" {
		return tag, restored, nil
	}
	e.log.Info("building environment for a run", "environment", env, "tag", tag)
	res, err := e.cfg.Images.Builder.Build(ctx, ce, logWriter{e.log.With("environment", env)}, true)
	if err != nil {
		return "", "", fault.Infraf("environment %s is not built on worker %s and building it failed: %w", env, e.cfg.Host, err)
	}
	return res.Tag, res.ImageID, nil
}

// archiveImage saves the run's image to the archive once (later runs find it there),
// so an audit years later needs no registry.
func (e *Executor) archiveImage(ctx context.Context, imageID string) (*images.ArchivedImage, error) {
	if e.cfg.Images == nil || e.cfg.Images.Client == nil || imageID == "" {
		return nil, nil
	}
	a, err := images.Save(ctx, e.cfg.Images.Client, e.archive, imageID, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("archiving image %s: %w", imageID, err)
	}
	return &a, nil
}

// logWriter sends build progress to the log, a line at a time.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Debug("build", "output", string(p))
	return len(p), nil
}

// restoreByRef brings back an image this host lacks from the archive, where an
// earlier run saved it under ref: it returns the restored image's ID, or "" when the
// archive has no image with that tag.
func (e *Executor) restoreByRef(ctx context.Context, ref string) (string, error) {
	if e.cfg.Images == nil || e.cfg.Images.Client == nil {
		return "", nil
	}
	objs, err := e.archive.List(ctx, images.ArchivePrefix)
	if err != nil {
		return "", err
	}
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, ".json") {
			continue
		}
		id := "sha256:" + strings.TrimSuffix(strings.TrimPrefix(o.Key, images.ArchivePrefix), ".json")
		a, err := images.Archived(ctx, e.archive, id)
		if err != nil || !slices.Contains(a.RepoTags, ref) {
			continue
		}
		e.log.Info("restoring image from the archive", "image", ref, "id", a.ImageID)
		if err := images.Restore(ctx, e.cfg.Images.Client, e.archive, a.ImageID); err != nil {
			return "", err
		}
		return a.ImageID, nil
	}
	return "", nil
}
