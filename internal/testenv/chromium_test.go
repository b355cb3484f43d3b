package testenv

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestScreenshotWithoutBrowserFails(t *testing.T) {
	// /bin/true exits at once and writes nothing: the helper must say so.
	out := filepath.Join(t.TempDir(), "x.png")
	if err := Screenshot(t, "/bin/true", "about:blank", out, 100, 100); err == nil {
		t.Fatal("no error without a screenshot")
	}
	if _, err := DumpDOM(t, "/bin/true", "about:blank"); err == nil {
		t.Fatal("no error without a DOM")
	}
}

func TestChromium(t *testing.T) {
	chromium := Chromium(t)
	const page = `data:text/html,<body style="margin:0;background:%23d62728"><p id="p">hello repro</p></body>`
	out := filepath.Join(t.TempDir(), "shot.png")
	if err := Screenshot(t, chromium, page, out, 320, 200); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 320 || b.Dy() != 200 {
		t.Errorf("screenshot is %v, want 320x200", b)
	}
	r, g, b, _ := img.At(300, 190).RGBA()
	if r>>8 < 200 || g>>8 > 60 || b>>8 > 60 {
		t.Errorf("background pixel is %d,%d,%d, want the page's red", r>>8, g>>8, b>>8)
	}
	dom, err := DumpDOM(t, chromium, page)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dom, `<p id="p">hello repro</p>`) {
		t.Errorf("DOM lacks the paragraph: %s", dom)
	}
}
