package testenv

import (
	"image"
	"image/png"
	"os"
	"strconv"
	"strings"
)

// RGB is a colour to look for in a screenshot.
type RGB struct{ R, G, B int }

// HexColor parses "#rrggbb".
func HexColor(s string) RGB {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "#"), 16, 32)
	if err != nil {
		panic(err)
	}
	return RGB{int(v >> 16 & 0xff), int(v >> 8 & 0xff), int(v & 0xff)}
}

// PixelStats counts the pixels within a distance of 20 of each colour, and the
// pixels that are not (nearly) white: enough to tell that a plot in a colour of
// its own really rendered.
func PixelStats(img image.Image, colors []RGB) (near []int, nonWhite int) {
	near = make([]int, len(colors))
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r32, g32, b32, _ := img.At(x, y).RGBA()
			r, g, bl := int(r32>>8), int(g32>>8), int(b32>>8)
			if r < 245 || g < 245 || bl < 245 {
				nonWhite++
			}
			for i, c := range colors {
				dr, dg, db := r-c.R, g-c.G, bl-c.B
				if dr*dr+dg*dg+db*db <= 20*20 {
					near[i]++
				}
			}
		}
	}
	return near, nonWhite
}

// DecodePNG reads a PNG file.
func DecodePNG(path string) (image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return png.Decode(f)
}
