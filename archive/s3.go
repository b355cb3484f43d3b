package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/repro/repro/fault"
)

// Upload tuning. An upload larger than smallObject holds an upload slot, and
// with it at most uploadThreads part buffers of partSize bytes plus one pooled
// buffer of partSize (for objects up to one part, and for the first part of
// streams of unknown size); at most maxUploads slots exist per S3 value. Memory
// stays bounded whatever the objects' sizes: about 80 MiB per slot, 320 MiB in
// all, plus at most smallObject per Put in progress.
const (
	partSize      = 16 << 20 // bytes per multipart part, S3's minimum is 5 MiB
	smallObject   = 1 << 20  // objects up to this size need no upload slot
	uploadThreads = 4        // parts in flight per upload
	maxUploads    = 4        // concurrent multipart uploads per S3 value
	maxParts      = 10000    // S3's limit on parts per upload
)

// metaSHA256 is the user metadata key that records an object's sha256
// (x-amz-meta-repro-sha256 on the wire).
const metaSHA256 = "Repro-Sha256"

// S3Config configures the S3 backend.
type S3Config struct {
	// Endpoint is host[:port] ("minio.internal:9000"). A URL with an http:// or
	// https:// scheme is accepted too; the scheme then decides Secure.
	Endpoint  string
	AccessKey string
	SecretKey string
	Bucket    string
	Region    string // "" lets the client discover it
	// Secure selects HTTPS; false (plain HTTP) is allowed for a local MinIO.
	Secure bool
	// RetentionDays is the object-lock retention, in GOVERNANCE mode, applied to
	// every object written (and set as the bucket's default when NewS3 creates the
	// bucket); 0 means none.
	RetentionDays int
	// SealedRetentionDays is the GOVERNANCE retention of sealed objects, the
	// evidence written create-only (run manifests, verification and audit
	// reports), when the bucket has object lock and this is longer than
	// RetentionDays; 0 means none beyond RetentionDays.
	SealedRetentionDays int
}

// S3 is a [Store] on an S3-compatible service (MinIO, AWS S3, ...), in one
// bucket with versioning and, where NewS3 creates it, object lock: an object
// overwritten by mistake keeps its earlier versions, and with RetentionDays > 0 no
// version can be deleted before its retention ends.
type S3 struct {
	client    *minio.Client
	bucket    string
	endpoint  string
	retention time.Duration
	sealed    time.Duration // retention of sealed objects (when locked)
	locked    bool          // the bucket has object lock
	withMeta  bool          // the listing can carry user metadata (MinIO)
	uploads   chan struct{} // semaphore: uploads larger than smallObject
	bufs      sync.Pool     // *[]byte of partSize, for small objects and peeks
}

var _ Store = (*S3)(nil)

// NewS3 connects to cfg's endpoint and makes sure the bucket is fit to archive
// runs. A missing bucket is created with object locking (which implies
// versioning) and, with RetentionDays > 0, a default GOVERNANCE retention. An
// existing bucket must have versioning enabled, and object lock too when
// RetentionDays > 0. An unreachable endpoint or rejected credentials give an
// infrastructure fault.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	endpoint, secure, err := parseEndpoint(cfg.Endpoint, cfg.Secure)
	if err != nil {
		return nil, err
	}
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("archive: s3 bucket %q: %w", cfg.Bucket, err)
	}
	if cfg.RetentionDays < 0 || cfg.SealedRetentionDays < 0 {
		return nil, fmt.Errorf("archive: s3 retention %d days, sealed %d days: must not be negative", cfg.RetentionDays, cfg.SealedRetentionDays)
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, errors.New("archive: s3: set both access key and secret key, or neither")
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.New(&credentials.Static{}) // anonymous
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:  creds,
		Secure: secure,
		Region: cfg.Region,
		// Trailing checksums: the server verifies a CRC of every part.
		TrailingHeaders: true,
	})
	if err != nil {
		return nil, fmt.Errorf("archive: s3 endpoint %q: %w", cfg.Endpoint, err)
	}
	s := &S3{
		client:    client,
		bucket:    cfg.Bucket,
		endpoint:  endpoint,
		retention: time.Duration(cfg.RetentionDays) * 24 * time.Hour,
		sealed:    time.Duration(cfg.SealedRetentionDays) * 24 * time.Hour,
		withMeta:  !s3utils.IsAmazonEndpoint(*client.EndpointURL()) && !s3utils.IsGoogleEndpoint(*client.EndpointURL()),
		uploads:   make(chan struct{}, maxUploads),
	}
	s.bufs.New = func() any { b := make([]byte, partSize); return &b }
	// A MinIO that is still starting answers "not initialized": wait for it.
	for attempt := 1; ; attempt++ {
		err := s.ensureBucket(ctx, cfg.Region, cfg.RetentionDays)
		if err == nil {
			return s, nil
		}
		if !startingUp(err) || attempt == 40 {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// startingUp reports a MinIO server that is up but not yet serving.
func startingUp(err error) bool {
	return errCode(err) == "XMinioServerNotInitialized" || strings.Contains(err.Error(), "Server not initialized")
}

// parseEndpoint accepts host[:port] or an http(s) URL.
func parseEndpoint(ep string, secure bool) (string, bool, error) {
	if ep == "" {
		return "", false, errors.New("archive: s3: no endpoint configured")
	}
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return "", false, fmt.Errorf("archive: s3 endpoint %q: %w", ep, err)
		}
		switch u.Scheme {
		case "http":
			secure = false
		case "https":
			secure = true
		default:
			return "", false, fmt.Errorf("archive: s3 endpoint %q: scheme must be http or https", ep)
		}
		if u.Path != "" && u.Path != "/" {
			return "", false, fmt.Errorf("archive: s3 endpoint %q: must not have a path", ep)
		}
		ep = u.Host
	}
	if ep == "" || strings.ContainsAny(ep, "/?#") {
		return "", false, fmt.Errorf("archive: s3 endpoint %q: want host[:port]", ep)
	}
	return ep, secure, nil
}

// ensureBucket creates the bucket with object lock, or checks the existing one.
func (s *S3) ensureBucket(ctx context.Context, region string, retentionDays int) error {
	exists, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.connErr(ctx, "check bucket", err)
	}
	if !exists {
		err := s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: region, ObjectLocking: true})
		switch code := errCode(err); {
		case err == nil:
			s.locked = true
			slog.InfoContext(ctx, "archive: created bucket with object lock", "bucket", s.bucket, "endpoint", s.endpoint)
			if retentionDays > 0 {
				mode, days, unit := minio.Governance, uint(retentionDays), minio.Days
				if err := s.client.SetObjectLockConfig(ctx, s.bucket, &mode, &days, &unit); err != nil {
					return s.connErr(ctx, "set default retention", err)
				}
			}
			return nil
		case code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists":
			// Created concurrently: check it like any existing bucket.
		default:
			return s.connErr(ctx, "create bucket", err)
		}
	}

	v, err := s.client.GetBucketVersioning(ctx, s.bucket)
	if err != nil {
		return s.connErr(ctx, "get bucket versioning", err)
	}
	if !v.Enabled() {
		status := v.Status
		if status == "" {
			status = "never enabled"
		}
		return fault.Infraf("archive: s3 bucket %q has versioning %s: archived runs could be overwritten; enable versioning (better: recreate the bucket with object lock, e.g. `mc mb --with-lock`)", s.bucket, status)
	}
	lock, _, _, _, err := s.client.GetObjectLockConfig(ctx, s.bucket)
	locked := err == nil && lock == "Enabled"
	s.locked = locked
	if err != nil && errCode(err) != "ObjectLockConfigurationNotFoundError" {
		return s.connErr(ctx, "get object lock configuration", err)
	}
	if !locked {
		if retentionDays > 0 {
			return fault.Infraf("archive: s3 bucket %q has no object lock, so a retention of %d days cannot be applied; recreate the bucket with object lock or set the retention to 0", s.bucket, retentionDays)
		}
		slog.WarnContext(ctx, "archive: bucket has versioning but no object lock; archived runs and sealed reports can be deleted", "bucket", s.bucket)
	}
	return nil
}

// errCode returns the S3 error code in err's chain ("" if none).
func errCode(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code
	}
	var per *minio.ErrorResponse
	if errors.As(err, &per) && per != nil {
		return per.Code
	}
	return ""
}

// isNetErr reports a transport failure (refused, reset, DNS, timeout).
func isNetErr(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}

// connErr classifies an error of a bucket-level call.
func (s *S3) connErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("archive: s3 %s %s/%s: %w", op, s.endpoint, s.bucket, err)
	}
	switch code := errCode(err); {
	case code == "AccessDenied" || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "InvalidToken" || code == "ExpiredToken":
		return fault.Infraf("archive: s3 %s %s/%s: credentials rejected (%s): %w", op, s.endpoint, s.bucket, code, err)
	case code == "" && isNetErr(err):
		return fault.Infraf("archive: s3 %s: endpoint %s unreachable: %w", op, s.endpoint, err)
	}
	return fault.Infraf("archive: s3 %s %s/%s: %w", op, s.endpoint, s.bucket, err)
}

// objErr classifies an error of an object call: a missing object is
// ErrNotFound, a caller's cancellation stays as it is, anything else is an
// infrastructure fault.
func (s *S3) objErr(ctx context.Context, op, key string, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("archive: s3 %s %s: %w", op, key, err)
	}
	switch code := errCode(err); {
	case code == "NoSuchKey" || code == "NoSuchVersion":
		return fmt.Errorf("archive: s3 %s %s: %w", op, key, ErrNotFound)
	case code == "PreconditionFailed" || code == "ConditionalRequestConflict":
		return fmt.Errorf("archive: s3 %s %s: %w", op, key, errExists)
	case code == "" && isNetErr(err):
		return fault.Infraf("archive: s3 %s %s: endpoint %s unreachable: %w", op, key, s.endpoint, err)
	}
	return fault.Infraf("archive: s3 %s %s: %w", op, key, err)
}

// putOptions returns the options every upload shares.
func (s *S3) putOptions(sum string) minio.PutObjectOptions {
	opts := minio.PutObjectOptions{
		ContentType:  "application/octet-stream",
		UserMetadata: map[string]string{},
	}
	if sum != "" {
		opts.UserMetadata[metaSHA256] = sum
	}
	if s.retention > 0 {
		opts.Mode = minio.Governance
		opts.RetainUntilDate = time.Now().Add(s.retention).UTC()
	}
	return opts
}

func (s *S3) getBuf() *[]byte  { return s.bufs.Get().(*[]byte) }
func (s *S3) putBuf(b *[]byte) { s.bufs.Put(b) }

// Put implements [Store]. An object (or stream) of up to 16 MiB is read into
// memory, checked against the declared size and digest, and sent in one
// retryable request with its sha256 recorded. A larger one goes up as a multipart
// upload of 16 MiB parts, four in flight, read in order through the check, so
// that a mismatch aborts the upload before it completes; its sha256 is recorded
// when known beforehand (declared, or hashed first because r is an io.Seeker).
//
// Multipart payloads are sent unsigned (as minio-go does over HTTPS in any
// case) with a CRC32C per part that the server verifies: the sha256 chunk
// signatures minio-go would add over plain HTTP cost a third full hashing pass
// on each side, and the content's sha256 is checked here and recorded in the
// signed metadata anyway.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, sum string) (ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return ObjectInfo{}, err
	}
	if err := checkDigest(sum); err != nil {
		return ObjectInfo{}, err
	}
	if sum == "" {
		// Metadata is fixed when an upload starts: hash a seekable source first.
		if rs, ok := r.(io.ReadSeeker); ok {
			h, n, err := hashSeeker(ctx, rs)
			if err != nil {
				return ObjectInfo{}, fmt.Errorf("archive: put %s: hash source: %w", key, err)
			}
			if size >= 0 && n != size {
				return ObjectInfo{}, fmt.Errorf("archive: put %s: %w: source has %d bytes, declared %d", key, ErrCorrupt, n, size)
			}
			sum, size = h, n
		}
	}
	vr := newVerifyReader(ctxReader{ctx: ctx, r: r}, key, size, sum)
	opts := s.putOptions(sum)

	// A small object, or the head of a stream of unknown size, is read into
	// memory first; if that is all of it, it goes up in one retryable request.
	var head []byte
	if size < 0 || size <= smallObject {
		n := smallObject
		if size >= 0 {
			n = int(size)
		}
		data, whole, err := readSmall(vr, make([]byte, n), 0, size)
		if err != nil {
			return ObjectInfo{}, s.readErr(key, err)
		}
		if whole {
			return s.putSmall(ctx, key, data, vr.sum, opts)
		}
		head = data
	}

	// Larger: take an upload slot, which bounds the memory of all uploads.
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	case <-ctx.Done():
		return ObjectInfo{}, fmt.Errorf("archive: s3 put %s: %w", key, ctx.Err())
	}
	var body io.Reader = vr
	if size <= partSize {
		// Up to one part (or unknown): read it into a pooled buffer after the head.
		buf := s.getBuf()
		defer s.putBuf(buf)
		want := partSize
		if size >= 0 {
			want = int(size)
		}
		copy(*buf, head)
		data, whole, err := readSmall(vr, (*buf)[:want], len(head), size)
		if err != nil {
			return ObjectInfo{}, s.readErr(key, err)
		}
		if whole {
			return s.putSmall(ctx, key, data, vr.sum, opts)
		}
		// A long stream of unknown size: the part read goes first.
		body = io.MultiReader(bytes.NewReader(data), vr)
	}

	opts.PartSize = partSizeFor(size)
	opts.NumThreads = uploadThreads
	opts.ConcurrentStreamParts = true // NumThreads buffers of PartSize, read in order
	opts.DisableContentSha256 = true  // see above: CRC32C per part instead
	info, err := s.client.PutObject(ctx, s.bucket, key, body, size, opts)
	if err != nil {
		return ObjectInfo{}, s.objErr(ctx, "put", key, err)
	}
	if err := vr.done(); err != nil {
		// The upload completed without reading the whole stream: do not keep an
		// object whose content was not verified.
		s.removeVersion(ctx, key, info.VersionID)
		return ObjectInfo{}, err
	}
	return s.uploaded(key, info, vr.sum), nil
}

// readSmall reads vr into buf after the filled bytes already there. It returns
// the content and true when vr ended (checked against the declared size and
// digest), or, for a stream of unknown size that did not end, what was read and
// false.
func readSmall(vr *verifyReader, buf []byte, filled int, size int64) ([]byte, bool, error) {
	n, eof, err := fill(vr, buf[filled:])
	if err != nil {
		return nil, false, err
	}
	n += filled
	if !eof && size >= 0 {
		// All the declared bytes are in: the stream must end here (vr fails on
		// any byte past the declared size).
		if eof, err = atEOF(vr); err != nil {
			return nil, false, err
		}
		if !eof {
			return nil, false, fmt.Errorf("archive: put %s: %w: stream longer than its declared size %d", vr.key, ErrCorrupt, size)
		}
	}
	if eof {
		if err := vr.done(); err != nil {
			return nil, false, err
		}
	}
	return buf[:n], eof, nil
}

// readErr wraps an error from reading a Put's source.
func (s *S3) readErr(key string, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("archive: s3 put %s: read source: %w", key, err)
}

// putSmall uploads data in one retryable request.
func (s *S3) putSmall(ctx context.Context, key string, data []byte, sum string, opts minio.PutObjectOptions) (ObjectInfo, error) {
	opts.UserMetadata[metaSHA256] = sum
	opts.DisableMultipart = true
	info, err := s.client.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		return ObjectInfo{}, s.objErr(ctx, "put", key, err)
	}
	return s.uploaded(key, info, sum), nil
}

// putIfAbsent stores data at key unless key exists (errExists), atomically on
// services that honour If-None-Match (MinIO, AWS S3).
func (s *S3) putIfAbsent(ctx context.Context, key string, data []byte) (ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return ObjectInfo{}, err
	}
	h := sha256.Sum256(data)
	opts := s.putOptions("")
	if s.locked && s.sealed > s.retention {
		// Sealed objects are the evidence: kept at least this long.
		opts.Mode = minio.Governance
		opts.RetainUntilDate = time.Now().Add(s.sealed).UTC()
	}
	opts.SetMatchETagExcept("*")
	return s.putSmall(ctx, key, data, hex.EncodeToString(h[:]), opts)
}

// uploaded converts an upload's result.
func (s *S3) uploaded(key string, info minio.UploadInfo, sum string) ObjectInfo {
	mod := info.LastModified
	if mod.IsZero() {
		mod = time.Now()
	}
	return ObjectInfo{Key: key, Size: info.Size, SHA256: sum, VersionID: info.VersionID, ModTime: mod.UTC()}
}

// removeVersion deletes one version of key, bypassing a GOVERNANCE retention:
// used only to take back an upload that failed its checks.
func (s *S3) removeVersion(ctx context.Context, key, versionID string) {
	err := s.client.RemoveObject(context.WithoutCancel(ctx), s.bucket, key, minio.RemoveObjectOptions{VersionID: versionID, GovernanceBypass: true})
	if err != nil {
		slog.ErrorContext(ctx, "archive: cannot remove unverified upload", "key", key, "version", versionID, "err", err)
	}
}

// partSizeFor picks the part size: 16 MiB, or more for objects too large to fit
// 10000 such parts.
func partSizeFor(size int64) uint64 {
	p := int64(partSize)
	if size > p*maxParts {
		const mib = 1 << 20
		p = ((size+maxParts-1)/maxParts + mib - 1) / mib * mib
	}
	return uint64(p)
}

// fill reads r into buf until buf is full or r ends (eof true).
func fill(r io.Reader, buf []byte) (n int, eof bool, err error) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// atEOF reads from r expecting its end: it reports true at EOF and false if
// data followed (which the caller, having declared the size, then treats as an
// error from r itself).
func atEOF(r io.Reader) (bool, error) {
	var one [1]byte
	for {
		n, err := r.Read(one[:])
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if n > 0 {
			return false, nil
		}
	}
}

// info converts a stat or list result.
func (s *S3) info(oi minio.ObjectInfo) ObjectInfo {
	return ObjectInfo{Key: oi.Key, Size: oi.Size, SHA256: objSHA256(oi), VersionID: oi.VersionID, ModTime: oi.LastModified.UTC()}
}

// objSHA256 finds the recorded sha256 in a stat or list result.
func objSHA256(oi minio.ObjectInfo) string {
	cands := []string{oi.Metadata.Get("X-Amz-Meta-" + metaSHA256)}
	for _, m := range []minio.StringMap{oi.UserMetadata, oi.UserMetadataStripped} {
		for k, v := range m {
			if strings.EqualFold(k, metaSHA256) || strings.EqualFold(k, "X-Amz-Meta-"+metaSHA256) {
				cands = append(cands, v)
			}
		}
	}
	for _, c := range cands {
		if c != "" && checkDigest(c) == nil {
			return c
		}
	}
	return ""
}

// Get implements [Store].
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return nil, ObjectInfo{}, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, ObjectInfo{}, s.objErr(ctx, "get", key, err)
	}
	st, err := obj.Stat() // sends the request
	if err != nil {
		obj.Close()
		return nil, ObjectInfo{}, s.objErr(ctx, "get", key, err)
	}
	return obj, s.info(st), nil
}

// Stat implements [Store].
func (s *S3) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return ObjectInfo{}, err
	}
	st, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.objErr(ctx, "stat", key, err)
	}
	return s.info(st), nil
}

// List implements [Store].
func (s *S3) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	for oi := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, WithMetadata: s.withMeta}) {
		if oi.Err != nil {
			return nil, s.objErr(ctx, "list", prefix, oi.Err)
		}
		out = append(out, s.info(oi))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("archive: s3 list %s: %w", prefix, err)
	}
	return out, nil
}

// Ping implements [Store]: the bucket must exist and answer.
func (s *S3) Ping(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.connErr(ctx, "ping", err)
	}
	if !ok {
		return fault.Infraf("archive: s3 bucket %q on %s does not exist", s.bucket, s.endpoint)
	}
	return nil
}

// Location implements [Store]: an s3:// URL.
func (s *S3) Location(key string) string {
	return "s3://" + s.bucket + "/" + key
}

// Client returns the underlying minio-go client, for operations the Store
// interface does not cover (presigned links, administration).
func (s *S3) Client() *minio.Client { return s.client }

// Bucket returns the bucket's name.
func (s *S3) Bucket() string { return s.bucket }
