package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"token-rotator/internal/testenv"
)

var (
	mdLink     = regexp.MustCompile(`\]\(([^()\s]+)\)`)
	codeSpan   = regexp.MustCompile("`[^`\n]*`")
	fencedCode = regexp.MustCompile("(?ms)^ *(```|~~~).*?^ *(```|~~~)[^\n]*$")
	urlScheme  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// docFiles are the project's documents: README, the two of figures, and docs/.
func docFiles(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("docs/*.md: %v, %d files", err, len(docs))
	}
	return append([]string{"README.md", "RELIABILITY.md", "BENCHMARKS.md"}, docs...)
}

// TestDocLinksResolve: every relative link in the documents, [text](path#anchor), names a file or
// directory that exists and, with an anchor, a heading of that markdown file (GitHub's slug of
// it); links in code are not links and are left alone.
func TestDocLinksResolve(t *testing.T) {
	anchors := map[string]map[string]bool{}
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		anchors[path] = testenv.Anchors(string(b))
		return anchors[path]
	}
	links := 0
	for _, file := range docFiles(t) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := codeSpan.ReplaceAllString(fencedCode.ReplaceAllString(string(b), ""), "")
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if urlScheme.MatchString(target) {
				continue
			}
			links++
			path, anchor, _ := strings.Cut(target, "#")
			resolved := file
			if path != "" {
				resolved = filepath.Join(filepath.Dir(file), path)
				if _, err := os.Stat(resolved); err != nil {
					t.Errorf("%s: link %s: no such file %s", file, target, resolved)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(resolved, ".md") {
				t.Errorf("%s: link %s: an anchor into %s, which is not markdown", file, target, resolved)
			} else if !anchorsOf(resolved)[anchor] {
				t.Errorf("%s: link %s: %s has no heading #%s", file, target, resolved, anchor)
			}
		}
	}
	if links < 20 {
		t.Errorf("found %d relative links in the documents; the parser has missed some", links)
	}
}

// TestDocsAreLinkedAndSaySo: each file in docs/ opens with a title and a line saying what it
// covers, and README links to it, so none is found only by listing the directory.
func TestDocsAreLinkedAndSaySo(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range docFiles(t)[3:] {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		title, rest, _ := strings.Cut(string(b), "\n\n")
		intro, _, _ := strings.Cut(rest, "\n\n")
		if !strings.HasPrefix(title, "# ") || strings.Contains(title, "\n") || intro == "" || strings.HasPrefix(intro, "#") {
			t.Errorf("%s does not open with a title and a line saying what it covers", file)
		}
		if !strings.Contains(string(readme), "]("+filepath.ToSlash(file)) {
			t.Errorf("README.md does not link to %s", file)
		}
	}
}
