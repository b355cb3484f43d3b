package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// PutSealed writes data at key once: a later PutSealed of the same content is a
// no-op that returns the stored object, one of other content fails with ErrSealed.
// Reports (verifications, audits) are archived this way, so that the evidence a
// verdict names cannot be rewritten; with S3 the bucket's object-lock retention
// applies as to every object.
func PutSealed(ctx context.Context, st Store, key string, data []byte) (ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return ObjectInfo{}, err
	}
	info, err := createOnce(ctx, st, key, data)
	if !errors.Is(err, errExists) {
		if err != nil {
			return ObjectInfo{}, fmt.Errorf("archive: seal %s: %w", key, err)
		}
		return info, nil
	}
	rc, info, err := st.Get(ctx, key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("archive: seal %s: read the stored object: %w", key, err)
	}
	defer rc.Close()
	stored, err := io.ReadAll(io.LimitReader(rc, int64(len(data))+1))
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("archive: seal %s: read the stored object: %w", key, err)
	}
	if !bytes.Equal(stored, data) {
		return ObjectInfo{}, fmt.Errorf("archive: %s is archived with other content: %w", key, ErrSealed)
	}
	return info, nil
}

// createOnce stores data at key unless key exists (errExists): atomically where the
// store can, else check-then-put.
func createOnce(ctx context.Context, st Store, key string, data []byte) (ObjectInfo, error) {
	if cs, ok := st.(createStore); ok {
		return cs.putIfAbsent(ctx, key, data)
	}
	// Not atomic: a concurrent writer can slip in between.
	_, err := st.Stat(ctx, key)
	switch {
	case err == nil:
		return ObjectInfo{}, errExists
	case errors.Is(err, ErrNotFound):
		return st.Put(ctx, key, bytes.NewReader(data), int64(len(data)), sha256Hex(data))
	}
	return ObjectInfo{}, err
}
