package testenv

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// Heading is one heading of a markdown file: its level (the number of #), its text, and the
// byte offsets of the line it is on.
type Heading struct {
	Level      int
	Text       string
	Start, End int
}

var headingLine = regexp.MustCompile(`^(#{1,6})[ \t]+(.*?)[ \t#]*$`)

// Headings lists the ATX headings (# Title) of a markdown text, outside fenced code blocks.
func Headings(text string) []Heading {
	var hs []Heading
	fence := ""
	for off := 0; off < len(text); {
		end := strings.IndexByte(text[off:], '\n')
		if end < 0 {
			end = len(text)
		} else {
			end += off
		}
		line := text[off:end]
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case fence != "":
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
		case strings.HasPrefix(trimmed, "```"), strings.HasPrefix(trimmed, "~~~"):
			fence = trimmed[:3]
		default:
			if m := headingLine.FindStringSubmatch(line); m != nil {
				hs = append(hs, Heading{Level: len(m[1]), Text: m[2], Start: off, End: end})
			}
		}
		off = end + 1
	}
	return hs
}

// Slug is the anchor GitHub gives a heading's text: lower case, inline code's backticks and any
// other punctuation dropped but for - and _, spaces turned into -. (A second heading of the
// same text gets -1, and so on: see Anchors.)
func Slug(text string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// Anchors is the set of anchors the headings of a markdown text have on GitHub.
func Anchors(text string) map[string]bool {
	anchors, seen := map[string]bool{}, map[string]int{}
	for _, h := range Headings(text) {
		s := Slug(h.Text)
		if n := seen[s]; n > 0 {
			anchors[s+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[s] = true
		}
		seen[s]++
	}
	return anchors
}

// DocSection returns the text of the section of the markdown file path whose heading reads
// title (at any level, without the #s), up to the next heading of the same or a higher level.
// The test fails when the file has no such heading, or more than one.
func DocSection(t testing.TB, path, title string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	hs := Headings(text)
	var found []int
	for i, h := range hs {
		if h.Text == title {
			found = append(found, i)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s has %d sections headed %q, want one", path, len(found), title)
	}
	i := found[0]
	end := len(text)
	for _, h := range hs[i+1:] {
		if h.Level <= hs[i].Level {
			end = h.Start
			break
		}
	}
	return text[hs[i].End:end]
}
