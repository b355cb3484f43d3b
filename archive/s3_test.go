package archive

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/repro/repro/fault"
	"github.com/repro/repro/internal/testenv"
)

func TestNewS3CreatesLockedBucket(t *testing.T) {
	ctx := context.Background()
	m := testenv.StartMinIO(t)

	t.Run("no retention", func(t *testing.T) {
		st := newS3On(t, m, "locked-plain", 0)
		c := st.Client()
		v, err := c.GetBucketVersioning(ctx, st.Bucket())
		if err != nil || !v.Enabled() {
			t.Fatalf("versioning = %+v, %v; want enabled", v, err)
		}
		lock, mode, _, _, err := c.GetObjectLockConfig(ctx, st.Bucket())
		if err != nil || lock != "Enabled" {
			t.Fatalf("object lock = %q, %v; want Enabled", lock, err)
		}
		if mode != nil {
			t.Errorf("default retention mode %v set without RetentionDays", *mode)
		}
		info, err := st.Put(ctx, "runs/x/log.txt", strings.NewReader("hi"), 2, "")
		if err != nil {
			t.Fatal(err)
		}
		if rmode, until, err := c.GetObjectRetention(ctx, st.Bucket(), "runs/x/log.txt", info.VersionID); err == nil && rmode != nil && *rmode != "" {
			t.Errorf("object has retention %v until %v without RetentionDays", *rmode, until)
		}
		// Opening the same bucket again is fine.
		newS3On(t, m, "locked-plain", 0)
	})

	t.Run("sealed objects retained longer", func(t *testing.T) {
		st, err := NewS3(ctx, S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey, Bucket: "locked-sealed", SealedRetentionDays: 2})
		if err != nil {
			t.Fatal(err)
		}
		c := st.Client()
		sealed, err := PutSealed(ctx, st, "verifications/v/report.json", []byte(`{"verdict":"verified"}`))
		if err != nil {
			t.Fatal(err)
		}
		rmode, until, err := c.GetObjectRetention(ctx, st.Bucket(), "verifications/v/report.json", sealed.VersionID)
		if err != nil || rmode == nil || *rmode != minio.Governance || until == nil ||
			until.Before(time.Now().Add(47*time.Hour)) || until.After(time.Now().Add(49*time.Hour)) {
			t.Fatalf("sealed object retention = %v until %v, %v; want GOVERNANCE for 2 days", rmode, until, err)
		}
		// A governed version cannot be deleted without bypassing governance.
		if err := c.RemoveObject(ctx, st.Bucket(), "verifications/v/report.json", minio.RemoveObjectOptions{VersionID: sealed.VersionID}); err == nil {
			t.Error("a sealed report version was deleted")
		}
		// Ordinary objects follow RetentionDays (none here).
		info, err := st.Put(ctx, "runs/x/log.txt", strings.NewReader("hi"), 2, "")
		if err != nil {
			t.Fatal(err)
		}
		if rmode, until, err := c.GetObjectRetention(ctx, st.Bucket(), "runs/x/log.txt", info.VersionID); err == nil && rmode != nil && *rmode != "" {
			t.Errorf("an ordinary object has retention %v until %v", *rmode, until)
		}
	})

	t.Run("retention applied", func(t *testing.T) {
		st := newS3On(t, m, "locked-retained", 1)
		c := st.Client()
		lock, mode, validity, unit, err := c.GetObjectLockConfig(ctx, st.Bucket())
		if err != nil || lock != "Enabled" || mode == nil || *mode != minio.Governance || validity == nil || *validity != 1 || unit == nil || *unit != minio.Days {
			t.Fatalf("lock config = %q %v %v %v, %v; want Enabled GOVERNANCE 1 DAYS", lock, mode, validity, unit, err)
		}
		for _, c := range []struct {
			key  string
			data []byte
			size int64
		}{
			{"runs/r/small.txt", []byte("small"), 5},
			{"runs/r/large.bin", randBytes(7, partSize+1), -1},
		} {
			info, err := st.Put(ctx, c.key, stream(c.data), c.size, "")
			if err != nil {
				t.Fatal(err)
			}
			rmode, until, err := st.Client().GetObjectRetention(ctx, st.Bucket(), c.key, info.VersionID)
			if err != nil {
				t.Fatalf("%s: GetObjectRetention: %v", c.key, err)
			}
			if rmode == nil || *rmode != minio.Governance {
				t.Errorf("%s: retention mode %v, want GOVERNANCE", c.key, rmode)
			}
			if until == nil || until.Before(time.Now().Add(23*time.Hour)) || until.After(time.Now().Add(25*time.Hour)) {
				t.Errorf("%s: retain until %v, want about a day from now", c.key, until)
			}
			// A locked version cannot simply be deleted.
			err = st.Client().RemoveObject(ctx, st.Bucket(), c.key, minio.RemoveObjectOptions{VersionID: info.VersionID})
			if err == nil {
				t.Errorf("%s: deleting a retained version succeeded", c.key)
			}
		}
	})

	t.Run("bundle with retention", func(t *testing.T) {
		st := newS3On(t, m, "locked-bundles", 2)
		dir := writeTree(t, bundleFiles())
		b, err := UploadBundle(ctx, st, "kept", dir, testFP)
		if err != nil {
			t.Fatal(err)
		}
		if b2, err := UploadBundle(ctx, st, "kept", dir, testFP); err != nil || b2.ManifestSHA256 != b.ManifestSHA256 {
			t.Fatalf("re-upload: %v", err)
		}
		if _, err := VerifyBundle(ctx, st, "kept"); err != nil {
			t.Fatal(err)
		}
		mi, err := st.Stat(ctx, BundleKey("kept", ManifestName))
		if err != nil {
			t.Fatal(err)
		}
		rmode, until, err := st.Client().GetObjectRetention(ctx, st.Bucket(), mi.Key, mi.VersionID)
		if err != nil || rmode == nil || *rmode != minio.Governance || until == nil || until.Before(time.Now().Add(47*time.Hour)) {
			t.Errorf("manifest retention %v until %v (%v), want GOVERNANCE for 2 days", rmode, until, err)
		}
	})

	t.Run("existing bucket without versioning", func(t *testing.T) {
		c := newS3On(t, m, "helper-bucket", 0).Client()
		if err := c.MakeBucket(ctx, "unversioned", minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := NewS3(ctx, S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey, Bucket: "unversioned"})
		if err == nil || !strings.Contains(err.Error(), "versioning") {
			t.Fatalf("NewS3 on an unversioned bucket = %v, want a versioning error", err)
		}
		// Versioned but not locked: fine without retention, refused with it.
		if err := c.MakeBucket(ctx, "versioned", minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c.EnableVersioning(ctx, "versioned"); err != nil {
			t.Fatal(err)
		}
		if _, err := NewS3(ctx, S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey, Bucket: "versioned"}); err != nil {
			t.Errorf("NewS3 on a versioned bucket: %v", err)
		}
		_, err = NewS3(ctx, S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey, Bucket: "versioned", RetentionDays: 3})
		if err == nil || !strings.Contains(err.Error(), "object lock") {
			t.Errorf("NewS3 with retention on an unlocked bucket = %v, want an object lock error", err)
		}
	})

	t.Run("bad credentials", func(t *testing.T) {
		_, err := NewS3(ctx, S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: "wrong-secret", Bucket: "whatever"})
		if err == nil || fault.Of(err) != fault.Infra || !strings.Contains(err.Error(), "credentials") {
			t.Fatalf("NewS3 with a wrong secret = %v, want an infra fault naming credentials", err)
		}
	})
}

func TestNewS3Errors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	port := testenv.FreePort(t)
	_, err := NewS3(ctx, S3Config{Endpoint: fmt.Sprintf("127.0.0.1:%d", port), AccessKey: "a", SecretKey: "b", Bucket: "runs"})
	if err == nil || fault.Of(err) != fault.Infra || fault.IsUser(err) {
		t.Fatalf("NewS3 on a closed port = %v, want an infrastructure fault", err)
	}
	if !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("error %q does not say unreachable", err)
	}
	for _, cfg := range []S3Config{
		{Bucket: "runs"}, // no endpoint
		{Endpoint: "localhost:9000", Bucket: "A_B"}, // bad bucket name
		{Endpoint: "localhost:9000", Bucket: "runs", RetentionDays: -1},
		{Endpoint: "localhost:9000", Bucket: "runs", AccessKey: "only"},
		{Endpoint: "ftp://localhost:9000", Bucket: "runs"},
		{Endpoint: "http://localhost:9000/path", Bucket: "runs"},
	} {
		if _, err := NewS3(ctx, cfg); err == nil {
			t.Errorf("NewS3(%+v) accepted a bad configuration", cfg)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, c := range []struct {
		in         string
		secure     bool
		wantHost   string
		wantSecure bool
	}{
		{"minio:9000", false, "minio:9000", false},
		{"minio:9000", true, "minio:9000", true},
		{"http://minio:9000", true, "minio:9000", false},
		{"https://s3.example.com/", false, "s3.example.com", true},
	} {
		host, sec, err := parseEndpoint(c.in, c.secure)
		if err != nil || host != c.wantHost || sec != c.wantSecure {
			t.Errorf("parseEndpoint(%q, %v) = %q, %v, %v", c.in, c.secure, host, sec, err)
		}
	}
}

func TestPartSizeFor(t *testing.T) {
	if got := partSizeFor(-1); got != partSize {
		t.Errorf("unknown size: %d", got)
	}
	if got := partSizeFor(1 << 30); got != partSize {
		t.Errorf("1 GiB: %d", got)
	}
	huge := int64(500) << 30
	if got := partSizeFor(huge); int64(got)*maxParts < huge || got%(1<<20) != 0 {
		t.Errorf("500 GiB: part size %d does not fit in %d parts", got, maxParts)
	}
}

// TestPutStreamBoundedMemory streams 2 GiB of generated data of unknown size
// and checks that the heap stays small.
func TestPutStreamBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 2 GiB")
	}
	const size = 2 << 30
	const limit = 256 << 20
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t)
			ctx := context.Background()
			runtime.GC()

			var (
				mu   sync.Mutex
				peak uint64
				stop = make(chan struct{})
				done = make(chan struct{})
			)
			go func() {
				defer close(done)
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				var ms runtime.MemStats
				for {
					runtime.ReadMemStats(&ms)
					mu.Lock()
					peak = max(peak, ms.HeapInuse)
					mu.Unlock()
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			src := newGenReader(42, size)
			start := time.Now()
			info, err := st.Put(ctx, "runs/big/stream.bin", src, -1, "")
			elapsed := time.Since(start)
			close(stop)
			<-done
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if info.Size != size || info.SHA256 != src.sum() {
				t.Fatalf("Put info = %+v, want size %d sha256 %s", info, size, src.sum())
			}
			si, err := st.Stat(ctx, "runs/big/stream.bin")
			if err != nil || si.Size != size {
				t.Fatalf("Stat = %+v, %v", si, err)
			}
			t.Logf("%s: 2 GiB stream in %v (%.0f MB/s), peak heap in use %d MiB", be.name, elapsed.Round(time.Millisecond), float64(size)/elapsed.Seconds()/1e6, peak>>20)
			if peak > limit {
				t.Errorf("peak heap in use %d MiB, want under %d MiB", peak>>20, limit>>20)
			}
		})
	}
}

// TestS3ConcurrentPutsBounded checks that parallel multipart uploads share the
// upload semaphore and all succeed.
func TestS3ConcurrentPuts(t *testing.T) {
	st := newS3(t, 0)
	ctx := context.Background()
	data := randBytes(3, partSize+100)
	var wg sync.WaitGroup
	errs := make([]error, 2*maxUploads)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = st.Put(ctx, fmt.Sprintf("runs/par/%d", i), stream(data), -1, sum(data))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	list, err := st.List(ctx, "runs/par/")
	if err != nil || len(list) != len(errs) {
		t.Fatalf("List = %d objects, %v", len(list), err)
	}
}
