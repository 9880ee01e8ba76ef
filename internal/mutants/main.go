// Command mutants breaks the product on purpose, one named mutation at a time, and runs the tests
// that must notice: each mutation is a small edit applied to a copy of the tree, and it is killed
// when the tests named for it fail. A mutation that survives (the tests still pass) is a promise no
// test holds; one that does not apply or does not compile is a stale list; one whose tests hang
// past -timeout was not noticed in time. Each fails the run.
// It prints one line per mutation and "N killed, M survived". `make mutants` runs it; so does
// `make test`.
//
// Usage: go run ./internal/mutants [-workers N] [-run REGEXP]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

func main() {
	workers := flag.Int("workers", 2, "mutations tested at once, each in its own copy of the tree")
	only := flag.String("run", "", "test only the mutations whose name matches this regular expression")
	timeout := flag.Duration("timeout", 5*time.Minute, "the longest one mutation's tests may run")
	flag.Parse()
	os.Exit(run(*workers, *only, *timeout))
}

func run(workers int, only string, timeout time.Duration) int {
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		return 2
	}
	var todo []mutation
	re := regexp.MustCompile(only)
	for _, m := range mutations {
		if re.MatchString(m.name) {
			todo = append(todo, m)
		}
	}
	jobs := make(chan mutation)
	type result struct {
		m       mutation
		verdict string // killed, SURVIVED, STALE, TIMEOUT
		detail  string
		took    time.Duration
	}
	results := make(chan result)
	var wg sync.WaitGroup
	for w := 0; w < max(1, workers); w++ {
		dir, err := os.MkdirTemp("", "mutants-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "mutants:", err)
			return 2
		}
		defer os.RemoveAll(dir)
		if err := copyTree(root, dir); err != nil {
			fmt.Fprintln(os.Stderr, "mutants: copy the tree:", err)
			return 2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range jobs {
				start := time.Now()
				verdict, detail := test(dir, m, timeout)
				results <- result{m, verdict, detail, time.Since(start)}
			}
		}()
	}
	go func() {
		for _, m := range todo {
			jobs <- m
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	counts := map[string]int{}
	for r := range results {
		counts[r.verdict]++
		fmt.Printf("%-8s %-40s %s (%s) %s\n", r.verdict, r.m.name, r.m.file, r.took.Round(100*time.Millisecond), r.detail)
	}
	fmt.Printf("%d killed, %d survived", counts["killed"], counts["SURVIVED"])
	for _, v := range []string{"STALE", "TIMEOUT"} {
		if counts[v] > 0 {
			fmt.Printf(", %d %s", counts[v], strings.ToLower(v))
		}
	}
	fmt.Println()
	if counts["killed"] != len(todo) {
		return 1
	}
	return 0
}

// test applies m in the copy at dir, runs its tests, and puts the file back.
func test(dir string, m mutation, timeout time.Duration) (verdict, detail string) {
	path := filepath.Join(dir, m.file)
	orig, err := os.ReadFile(path)
	if err != nil {
		return "STALE", err.Error()
	}
	if n := bytes.Count(orig, []byte(m.old)); n != 1 {
		return "STALE", fmt.Sprintf("the text to change appears %d times, want once", n)
	}
	if err := os.WriteFile(path, bytes.Replace(orig, []byte(m.old), []byte(m.new), 1), 0o644); err != nil {
		return "STALE", err.Error()
	}
	defer os.WriteFile(path, orig, 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"test", "-count=1", "-run", m.tests}, strings.Fields(m.pkg)...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-trimpath")
	inOwnGroup(cmd) // a timeout stops the test binaries and the servers they started, not only go
	out, err := cmd.CombinedOutput()
	switch {
	case bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]")):
		return "STALE", "does not compile: " + firstLine(out, "error")
	case ctx.Err() != nil:
		// A hang is not an assertion failing: the list must name a test that notices in time.
		return "TIMEOUT", "tests ran past " + timeout.String() + " without failing"
	case err != nil:
		return "killed", "by " + strings.TrimSuffix(strings.TrimPrefix(firstLine(out, "--- FAIL: "), "--- FAIL: "), ":")
	case !bytes.Contains(out, []byte("ok ")):
		return "STALE", "no test ran"
	case bytes.Contains(out, []byte("[no tests to run]")):
		return "STALE", "no test matches " + m.tests
	}
	return "SURVIVED", "the tests " + m.tests + " still pass"
}

func firstLine(out []byte, prefix string) string {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, prefix) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// repoRoot is the module root above the working directory.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the module")
	}
	return filepath.Dir(mod), nil
}

// copyTree copies the files git knows of (tracked, and untracked ones it does not ignore) from
// root to dir.
func copyTree(root, dir string) error {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("git ls-files: %w", err)
	}
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, rel)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the working tree, or not a plain file
		}
		dst := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := copyFile(src, dst, fi.Mode()); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode.Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
